"""Latency that a search can trust: fixed threads, real token ids, warm-up, many runs, interleaving.

Timings on a shared machine drift. Variants that are compared are therefore measured *interleaved*
(blocks of A, then of B, ... over many rounds) and summarized by their medians; the spread (IQR, p90,
coefficient of variation) is reported so a reader can tell signal from noise. Runners on a CUDA device are
timed with CUDA events (host timers would measure the launch, not the kernels).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, replace
from functools import partial

import numpy as np
import torch


@dataclass(frozen=True)
class Timing:
    name: str
    median_ms: float
    p10_ms: float  # the speed the code runs at when the machine's neighbours leave it alone (see README, Latency)
    p90_ms: float
    iqr_ms: float
    cv: float  # std / mean of the samples
    runs: int


def summarize(name: str, samples_s: list[float]) -> Timing:
    ms = np.asarray(samples_s) * 1000
    p10, q1, q3, p90 = np.percentile(ms, [10, 25, 75, 90])
    return Timing(
        name, float(np.median(ms)), float(p10), float(p90), float(q3 - q1), float(ms.std() / ms.mean()), len(ms)
    )


@dataclass(frozen=True)
class Repeated:
    """One callable over `repeated()`'s independent measurements: the median of their medians and of their 10th
    percentiles (with each one's spread), and p90 / IQR / CV over all samples kept."""

    median_ms: float
    medians_ms: list[float]
    cv_of_medians: float
    p10_ms: float
    p10s_ms: list[float]
    cv_of_p10s: float
    p90_ms: float
    iqr_ms: float
    cv: float
    runs: int

    def as_dict(self) -> dict[str, float | int | list[float]]:
        return asdict(self)

    def per(self, n: int) -> Repeated:
        """The same timing per input, for calls that each ran `n` inputs in turn (CVs are ratios: unchanged)."""
        ms = {k: getattr(self, k) / n for k in ("median_ms", "p10_ms", "p90_ms", "iqr_ms")}
        return replace(self, **ms, medians_ms=[m / n for m in self.medians_ms], p10s_ms=[m / n for m in self.p10s_ms])


WARMUP, BLOCK, SETTLE_S = 3, 3, 0.02  # see interleaved()
Fns = Mapping[str, Callable[[], object]]


def interleaved(
    fns: Fns,
    runs: int = 30,
    warmup: int = WARMUP,
    block: int = BLOCK,
    settle_s: float = SETTLE_S,
    cuda: Collection[str] = (),
) -> dict[str, Timing]:
    """Time each callable `runs` times: blocks of `block` back-to-back calls, the blocks interleaved round-robin
    (A A A B B B A A A ...) after `warmup` untimed calls each. Names in `cuda` are timed with CUDA events.

    Before each block: `settle_s` of sleep, so the previous runner's threads stop spinning (PyTorch's OpenMP
    workers spin for ~10 ms after a call and took a core from whatever ran next), then one untimed call, so
    this runner's caches and thread pool are warm again. Within a block calls follow each other as requests
    do on a busy server. Measured here: the first call after a switch was up to 1.6x slower than the rest.
    """
    return {k: summarize(k, v) for k, v in _samples(fns, runs, warmup, block, settle_s, cuda).items()}


def _timed(fn: Callable[[], object], on_cuda: bool) -> float:
    """Seconds one call takes: host clock, or CUDA events around it for a GPU runner."""
    if not on_cuda:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000


def _samples(
    fns: Fns, runs: int, warmup: int, block: int, settle_s: float, cuda: Collection[str] = ()
) -> dict[str, list[float]]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    while len(next(iter(samples.values()))) < runs:
        for name, fn in fns.items():
            time.sleep(settle_s)
            fn()
            for _ in range(min(block, runs - len(samples[name]))):
                samples[name].append(_timed(fn, name in cuda))
    return samples


def repeated(
    fns: Fns, runs: int = 30, repeats: int = 5, max_redo: int = 3, load_factor: float = 1.05, cuda: Collection[str] = ()
) -> tuple[dict[str, Repeated], list[float]]:
    """`repeats` independent interleaved measurements; per callable the median of their medians and of their
    10th percentiles, the CV of each, and p90/IQR/CV over all samples kept. Returns (results, load factors of
    the repeats that were redone).

    Other tenants of a shared machine sometimes slow *everything* for tens of seconds. Such a repeat shows as
    a common-mode shift: the typical callable (median over callables) runs more than `load_factor` times its
    median over the other repeats. That measures the machine, not the code: the repeat is run again (at most
    `max_redo` times) and reported, instead of silently widening the spread or being averaged in.
    """
    kept: list[dict[str, list[float]]] = []
    redone: list[float] = []
    while True:
        while len(kept) < repeats:
            kept.append(_samples(fns, runs, WARMUP, BLOCK, SETTLE_S, cuda))
        medians = [{k: 1000 * float(np.median(v)) for k, v in rep.items()} for rep in kept]  # ms
        ref = {k: statistics.median(m[k] for m in medians) for k in fns}
        load = [statistics.median(m[k] / ref[k] for k in fns) for m in medians]
        worst = int(np.argmax(load))
        if load[worst] <= load_factor or len(redone) >= max_redo:
            break
        redone.append(load[worst])
        kept.pop(worst)
    out = {}
    for k in fns:
        pooled = summarize(k, [x for rep in kept for x in rep[k]])
        per = [m[k] for m in medians]
        p10s = [1000 * float(np.percentile(rep[k], 10)) for rep in kept]
        out[k] = Repeated(
            median_ms=statistics.median(per),
            medians_ms=per,
            cv_of_medians=cv_of(per),
            p10_ms=statistics.median(p10s),
            p10s_ms=p10s,
            cv_of_p10s=cv_of(p10s),
            p90_ms=pooled.p90_ms,
            iqr_ms=pooled.iqr_ms,
            cv=pooled.cv,
            runs=pooled.runs,
        )
    return out, redone


def natural_lengths(
    fns: Mapping[str, Callable[[dict[str, torch.Tensor]], object]],
    batches: list[dict[str, torch.Tensor]],
    chunk: int = 5,
    settle_s: float = SETTLE_S,
) -> dict[str, np.ndarray]:
    """Seconds per call of each runner on each of `batches` (real texts at their own lengths), interleaved by
    chunks of texts: for each chunk, each runner after a settle and one untimed call. Entry i of every
    array is the same text, so per-text ratios compare like with like, timed seconds apart."""
    for fn in fns.values():
        for b in batches[:WARMUP]:
            fn(b)
    out = {k: np.zeros(len(batches)) for k in fns}
    for start in range(0, len(batches), chunk):
        part = range(start, min(start + chunk, len(batches)))
        for name, fn in fns.items():
            time.sleep(settle_s)
            fn(batches[part[0]])
            for i in part:
                out[name][i] = _timed(partial(fn, batches[i]), False)
    return out


def real_inputs(tokenizer, texts: list[str], batch: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Token ids of real text (`texts` drawn at random and concatenated) filling exactly `seq` positions."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(batch):
        ids: list[int] = []
        while len(ids) < seq - 2:
            ids += tokenizer(texts[int(rng.integers(len(texts)))], add_special_tokens=False)["input_ids"]
        rows.append([tokenizer.cls_token_id, *ids[: seq - 2], tokenizer.sep_token_id])
    input_ids = torch.tensor(rows, dtype=torch.long)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": torch.zeros_like(input_ids),
    }


def cv_of(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.mean(values) if len(values) > 1 else 0.0
