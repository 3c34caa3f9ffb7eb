"""Latency that a search can trust: fixed threads, real token ids, warm-up, many runs, interleaving.

Timings on a shared machine drift. Variants that are compared are therefore measured *interleaved*
(A B A B ... over many rounds) and summarized by their medians; the spread (IQR, p90, coefficient of
variation) is reported so a reader can tell signal from noise. FLOPs are counted analytically from the
config (grouped convolutions divide the dense cost by their group count), so achieved GFLOP/s shows how
far a backend is from what the hardware allows.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from compress.data import TaskSpec, load_task


@dataclass
class Timing:
    name: str
    median_ms: float
    p90_ms: float
    iqr_ms: float
    cv: float  # std / mean of the samples
    runs: int

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(name: str, samples_s: list[float]) -> Timing:
    ms = np.asarray(samples_s) * 1000
    q1, q3 = np.percentile(ms, [25, 75])
    return Timing(name, float(np.median(ms)), float(np.percentile(ms, 90)), float(q3 - q1), float(ms.std() / ms.mean()), len(ms))


def interleaved(fns: dict[str, Callable[[], object]], runs: int = 30, warmup: int = 3, per_round: int = 1, pause_s: float = 0.01) -> dict[str, Timing]:
    """Time each callable `runs` times, round-robin, after `warmup` untimed calls each.

    `pause_s` before each timed call lets the previous runner's idle worker threads (OpenMP's spin-wait
    after a PyTorch op) go to sleep, so one backend's threads do not steal the cores from the next one.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, runs // per_round)):
        for name, fn in fns.items():
            for _ in range(per_round):
                if pause_s:
                    time.sleep(pause_s)
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
    return {k: summarize(k, v) for k, v in samples.items()}


def cuda_time(fn: Callable[[], object], runs: int = 30, warmup: int = 3) -> Timing:
    """GPU timing with CUDA events (host timers would measure the launch, not the kernels)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end) / 1000)
    return summarize("cuda", out)


def real_inputs(tokenizer, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids of real text (embedded tweets, concatenated) filling exactly `seq` positions."""
    tweets = load_task(TaskSpec(max_train_samples=2000), seed).splits["train"]["text"].tolist()
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(batch):
        ids: list[int] = []
        while len(ids) < seq - 2:
            ids += tokenizer(tweets[int(rng.integers(len(tweets)))], add_special_tokens=False)["input_ids"]
        rows.append([tokenizer.cls_token_id, *ids[: seq - 2], tokenizer.sep_token_id])
    input_ids = np.asarray(rows, dtype=np.int64)
    return {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids), "token_type_ids": np.zeros_like(input_ids)}


def flops_per_sequence(config, seq: int) -> float:
    """Multiply-adds x 2 of the encoder + head for one sequence (embedding lookups excluded).

    Grouped convolutions divide the dense cost by their group count; pruned heads (config.pruned_heads)
    narrow that layer's attention width; a pruned FFN shows in config.intermediate_size."""
    H, F, L = config.hidden_size, config.intermediate_size, seq
    g = {k: getattr(config, f"{k}_groups", 1) for k in ("q", "k", "v", "post_attention", "intermediate", "output")}
    pruned = getattr(config, "pruned_heads", None) or {}
    head_dim = H // config.num_attention_heads
    total = 0.0
    for i in range(config.num_hidden_layers):
        A = (config.num_attention_heads - len(pruned.get(i, pruned.get(str(i), [])))) * head_dim  # attention width
        dense = 2 * L * (H * A * (1 / g["q"] + 1 / g["k"] + 1 / g["v"] + 1 / g["post_attention"]) + H * F * (1 / g["intermediate"] + 1 / g["output"]))
        total += dense + 2 * 2 * L * L * A  # + scores and weighted sum
    return total + 2 * (H * H + H * config.num_labels)


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cv_of(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.mean(values) if len(values) > 1 else 0.0
