"""A latency model: a model's latency in a deploy target predicted from timed blocks, stable where measurement is not.

Calibration times, in one interleaved session on this machine: every block a study needs (`blocks.plan`),
an empty call (the per-call overhead every separately timed block pays once), a few whole "anchor" models
with random weights, and the teacher's real deploy forms. A prediction is the sum of the blocks of an
architecture, corrected by a linear fit of the anchors (blocks timed alone miss what ONNX Runtime fuses
across them and pay their own input quantization). Measured on the MiniLM-sized models of the quickstart
space: median error 2.3% (int8) after the fit, rank correlation 1.0 over 9 anchors (README, Latency).

The model is valid for one machine, target, shape and thread count (`Fingerprint`); loading it anywhere
else is detected and it is recalibrated.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from scipy.stats import spearmanr
from transformers import SqueezeBertConfig, SqueezeBertForSequenceClassification

from compress.core.arch import Architecture
from compress.core.atomic import atomic_write_json
from compress.deploy.blocks import block, plan
from compress.deploy.latency import repeated
from compress.deploy.matmul_form import FORM_VERSION
from compress.deploy.targets import Target, build, compile_module, get_target, open_runner
from compress.modeling import squeezebert  # noqa: F401 - anchors with pruned heads
from compress.modeling.runners import Batch, Runner, torch_runner

log = logging.getLogger(__name__)
REPEATS = 3  # independent timing sessions of a calibration (measured: one session's anchor error ranged 1.8-5.9%)


class Fingerprint(BaseModel):
    """Where and how the blocks were timed; a model is only used where all of this matches."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    machine: str
    runtimes: dict[str, str]
    target: str
    seq: int
    batch: int
    threads: int
    inference_form: int = 1  # `matmul_form.FORM_VERSION` the blocks were exported with (1: files from before it)
    # padded: whole models timed at batch x seq; natural: batch 1 over real texts at their own lengths, per text (blocks
    # at `seq`, the texts' mean token count; the anchors' fit carries what varying shapes cost on top)
    shape: Literal["padded", "natural"] = "padded"


def fingerprint(
    target: Target, seq: int, batch: int, threads: int, shape: Literal["padded", "natural"] = "padded"
) -> Fingerprint:
    import onnxruntime

    cpu = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    return Fingerprint(
        machine=f"{cpu} x{os.cpu_count()} ({platform.machine()})",
        runtimes={"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        target=target.name,
        seq=seq,
        batch=batch,
        threads=threads,
        inference_form=FORM_VERSION,
        shape=shape,
    )


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


class Anchor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    arch: Architecture
    raw_ms: float
    measured_ms: float


class LatencyModel(BaseModel):
    """Block timings (p10 ms) and the linear correction fitted on whole anchor models."""

    model_config = ConfigDict(extra="forbid")
    fingerprint: Fingerprint
    blocks: dict[str, float]
    overhead_ms: float
    scale: float = 1.0
    offset: float = 0.0
    anchors: list[Anchor] = []
    teacher_ms: dict[str, float] = {}  # the teacher's deploy forms, timed in the calibration session

    def raw(self, arch: Architecture) -> float:
        """Sum of the blocks, each without the call overhead it paid alone (paid once per model)."""
        blocks = plan(arch, self._fuse_dense_qkv())
        return self.overhead_ms + sum(n * (self.blocks[k] - self.overhead_ms) for k, n in blocks.items())

    def _fuse_dense_qkv(self) -> bool:
        return get_target(self.fingerprint.target).fuse_dense_qkv

    def predict(self, arch: Architecture) -> float:
        """Predicted p10 latency in ms (call `extend` first for architectures with unseen blocks)."""
        return max(self.scale * self.raw(arch) + self.offset, 1e-3)

    def missing(self, archs: Iterable[Architecture]) -> set[str]:
        return {k for a in archs for k in plan(a, self._fuse_dense_qkv()) if k not in self.blocks}

    def reference_ms(self) -> float | None:
        """The teacher's fastest form, as timed with the blocks."""
        return min(self.teacher_ms.values()) if self.teacher_ms else None

    def anchor_error(self) -> float:
        """Median |predicted / measured - 1| over the anchors (how well the fit holds on whole models)."""
        errors = [abs((self.scale * a.raw_ms + self.offset) / a.measured_ms - 1) for a in self.anchors]
        return float(np.median(errors)) if errors else float("nan")

    def extend(self, archs: Iterable[Architecture], target: Target, runs: int = 40) -> int:
        """Time the blocks of `archs` this model has not seen yet (a study's space can reach beyond its anchors);
        returns how many were added (a caller that keeps the model saves it then)."""
        keys = sorted(self.missing(list(archs)))
        if keys:
            log.info("latency model: timing %d new block(s)", len(keys))
            self.blocks |= _time_blocks(keys, target, self.fingerprint, runs)[0]
        return len(keys)

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.model_dump(mode="json"))


def load(path: Path, wanted: Fingerprint) -> tuple[LatencyModel | None, str]:
    """The model saved at `path` if it was calibrated under `wanted`; else None and why not."""
    if not path.is_file():
        return None, "none calibrated yet"
    try:
        model = LatencyModel.model_validate(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ValidationError) as e:
        return None, f"{path.name} is unreadable ({type(e).__name__})"
    old, new = model.fingerprint.model_dump(), wanted.model_dump()
    diff = [f"{k} {old[k]} -> {new[k]}" for k in new if old[k] != new[k]]
    return (model, "") if not diff else (None, f"it was calibrated for another setting ({'; '.join(diff)})")


def anchor_model(arch: Architecture) -> torch.nn.Module:
    """A whole classifier of `arch` with random weights (groups 1 is BERT's inference form); layers with fewer heads
    than the width holds lose their last ones (compress.modeling.squeezebert)."""
    full = arch.hidden // arch.head_size
    g = arch.groups
    config = SqueezeBertConfig(
        hidden_size=arch.hidden,
        embedding_size=arch.hidden,
        num_hidden_layers=len(arch.heads),
        num_attention_heads=full,
        intermediate_size=arch.ffn,
        num_labels=arch.labels,
        q_groups=g["q"],
        k_groups=g["k"],
        v_groups=g["v"],
        post_attention_groups=g["post_attention"],
        intermediate_groups=g["intermediate"],
        output_groups=g["output"],
    )
    torch.manual_seed(0)
    net = SqueezeBertForSequenceClassification(config).eval()
    if min(arch.heads) < full:
        net.prune_heads({i: list(range(h, full)) for i, h in enumerate(arch.heads) if h < full})
    return net


def calibrate(
    target: Target,
    fp: Fingerprint,
    archs: list[Architecture],
    anchors: list[Architecture],
    teacher: Mapping[str, Runner],
    inputs: Sequence[Batch],
    runs: int = 40,
    reference: tuple[Architecture, str] | None = None,
) -> LatencyModel:
    """Time the blocks of `archs` and `anchors`; then the anchors whole and the teacher's forms; fit the one to the
    other.

    `inputs`: what a whole model is timed on; each timed call runs every one of them in turn, and its time counts per
    input (one padded batch; or real texts at their own lengths, whose shapes vary from call to call as in service).

    `reference`: the teacher's architecture and the name of its form in `target` among `teacher`: the real
    teacher is then one more anchor, so the fit passes through the very model speed-ups are measured against
    (anchors with random weights run at the same speed - measured - but one anchor fewer is one build less)."""
    every = [*archs, *anchors, *([reference[0]] if reference else [])]
    keys = sorted({k for a in every for k in plan(a, target.fuse_dense_qkv)})
    with tempfile.TemporaryDirectory() as tmp:
        whole = {}
        for i, arch in enumerate(anchors):
            net = anchor_model(arch)
            path = build(net, target, Path(tmp) / f"anchor{i}" / target.artifact) if target.artifact else None
            run = torch_runner(net) if path is None else open_runner(target, path, fp.threads)
            whole[f"anchor:{i}"] = partial(run_each, run, inputs)
        blocks, overhead, _ = _time_blocks(keys, target, fp, runs)
        # Whole models in a session of their own, like a trial's or the final timing run: timed among dozens of tiny
        # blocks, small models measured up to 15% slower relative to the teacher than among a few models.
        mine = {f"teacher:{k}": partial(run_each, r, inputs) for k, r in teacher.items()}
        timed, _ = repeated(whole | mine, runs=runs, repeats=REPEATS, max_redo=2)
        extra = {k: t.per(len(inputs)).p10_ms for k, t in timed.items()}
    teacher_ms = {k.split(":", 1)[1]: v for k, v in extra.items() if k.startswith("teacher:")}
    model = LatencyModel(fingerprint=fp, blocks=blocks, overhead_ms=overhead, teacher_ms=teacher_ms)
    pairs = [(a, extra[f"anchor:{i}"]) for i, a in enumerate(anchors)] + (
        [(reference[0], teacher_ms[reference[1]])] if reference else []
    )
    raw = [model.raw(a) for a, _ in pairs]
    model.scale, model.offset = fit(raw, [m for _, m in pairs])
    model.anchors = [Anchor(arch=a, raw_ms=r, measured_ms=m) for (a, m), r in zip(pairs, raw, strict=True)]
    log.info(
        "latency model (%s, %s seq %d, %d threads): %d blocks, %d anchors, fit %.3f x + %.2f ms, median anchor "
        "error %.1f%%",
        target.name,
        fp.shape,
        fp.seq,
        fp.threads,
        len(blocks),
        len(pairs),
        model.scale,
        model.offset,
        100 * model.anchor_error(),
    )
    return model


def run_each(run: Runner, inputs: Sequence[Batch]) -> None:
    """One timed call of a whole model: `run` on each of `inputs` in turn."""
    for b in inputs:
        run(b)


class _Empty(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


def _time_blocks(
    keys: list[str], target: Target, fp: Fingerprint, runs: int, extra: dict[str, Callable[[], object]] | None = None
) -> tuple[dict[str, float], float, dict[str, float]]:
    """p10 ms of each block, of an empty call, and of the `extra` callables, all in one interleaved session
    repeated `REPEATS` times (median of the repeats' p10; a repeat slowed by machine load is redone): one noisy
    moment of a shared machine must not shape the whole model."""
    fns: dict[str, Callable[[], object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, k in enumerate([*keys, "empty"]):
            module, inputs = (
                block(k, fp.seq, fp.batch) if k != "empty" else (_Empty(), {"x": torch.randn(fp.batch, fp.seq, 8)})
            )
            folder = Path(tmp) / str(i)
            folder.mkdir()
            fns[k] = compile_module(module, inputs, target, folder, fp.threads)
        timings, _ = repeated(fns | (extra or {}), runs=runs, repeats=REPEATS, max_redo=2)
    p10 = {k: t.p10_ms for k, t in timings.items()}
    return {k: p10[k] for k in keys}, p10["empty"], {k: p10[k] for k in extra or {}}


def agreement(predicted: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """(Spearman rank correlation, median |predicted / measured - 1|) of paired predictions and measurements: whether
    the model ranks models as measured (what a search needs) and how far off its numbers are. NaN for fewer than two."""
    if len(predicted) < 2:
        return float("nan"), float("nan")
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    return float(spearmanr(p, m)[0]), float(np.median(np.abs(p / m - 1)))


def fit(raw: list[float], measured: list[float]) -> tuple[float, float]:
    """measured ~ scale * raw + offset over the anchors, least squares in relative error. Where whole models do not
    get slower as their blocks do (a slope <= 0: per-call overhead swamps tiny models, e.g. eager PyTorch), a line
    would rank students backwards; then the fit is proportional (offset 0), which keeps the blocks' order, and the
    log says so."""
    if len(raw) >= 2 and np.ptp(raw) > 0:
        # Relative residuals (weights 1 / measured): speed-ups are ratios, so a 0.5 ms miss on a 1.5 ms student matters
        # as much as 3 ms on the 9 ms teacher; an unweighted line fits the big anchors and misses the small ones.
        weights = 1 / np.maximum(np.asarray(measured, float), 1e-9)
        scale, offset = (float(c) for c in np.polyfit(raw, measured, 1, w=weights))
        if scale > 0:
            return scale, offset
        log.warning(
            "latency model: whole-model times do not grow with the sum of their blocks (fit slope %.2f); using a "
            "proportional "
            "fit - the report's rank correlation says how far to trust it",
            scale,
        )
    return (float(np.median(np.divide(measured, raw))) if raw else 1.0), 0.0
