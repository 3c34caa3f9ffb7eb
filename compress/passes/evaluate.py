"""Measure the task's metrics of every model and deployable variant, and optionally their latency.

Latency is measured against the teacher's deploy forms (PyTorch fp32, ONNX Runtime fp32 and int8, OpenVINO
fp32 and int8 when compress[openvino] is installed, and both precisions of every other runtime a model here
is timed in - ExecuTorch - built once per teacher into the cache when the run has not made them): every
speed-up is against the fastest of those, timed in the same interleaved run.
"""

from __future__ import annotations

import copy
import fnmatch
import logging
from collections.abc import Mapping
from functools import partial
from typing import Literal

import torch
from pydantic import Field, PositiveInt
from rich.console import Console
from rich.table import Table

from compress.core.errors import CompressError
from compress.core.records import FormEval, Latency, NaturalLatency, SplitScores, fastest
from compress.data.encoding import single_batches
from compress.deploy import openvino
from compress.deploy.flops import flops_per_sequence
from compress.deploy.latency import interleaved, natural_lengths, real_inputs
from compress.deploy.targets import TARGETS, baseline_runtimes, cached_runner, form_name
from compress.modeling.runners import Runner, count_parameters, predict_with, torch_runner
from compress.pipeline.registry import Pass, PassConfig
from compress.pipeline.state import RunState

log = logging.getLogger(__name__)
Kind = tuple[str, str, str]  # (model, runtime, precision)


class Evaluate(Pass):
    """Accuracy and macro-F1 (95% bootstrap interval) of the teacher, students and their ONNX/int8 variants."""

    name = "evaluate"

    class Config(PassConfig):
        splits: tuple[Literal["validation", "test"], ...] = ("validation", "test")
        models: list[str] | None = Field(
            None, description="models/variants to evaluate, glob patterns allowed (student*); default: all"
        )
        batch_size: PositiveInt = 64
        latency: bool = Field(False, description="also time each one (interleaved, p10 and median of latency_runs)")
        latency_batch: PositiveInt = 1
        latency_seq: int = Field(128, ge=8, le=512)
        latency_runs: int = Field(30, ge=5)
        latency_reference: bool = Field(
            True, description="time the teacher's deploy forms alongside; speed-ups are against the fastest"
        )
        latency_natural: int = Field(
            0, ge=0, description="also time batch 1 on this many validation texts at their own lengths (0: off)"
        )
        latency_device: Literal["cpu", "cuda"] = Field(
            "cpu",
            description=(
                "where PyTorch forms are timed; training on a GPU does not move them there (ONNX Runtime "
                "forms run on CPU)"
            ),
        )

    def run(self, state: RunState, config: Config) -> RunState:
        models = state.models()
        available = {**models, **state.variants}
        wanted = (
            None
            if config.models is None
            else [
                m for p in config.models for m in (fnmatch.filter(available, p) if any(c in p for c in "*?[") else [p])
            ]
        )
        names = state.pick(wanted, available, "evaluate.models")
        # Build runners only for what is evaluated (each ONNX variant opens a session).
        runners = {
            n: torch_runner(models[n], state.device) if n in models else state.variants[n].runner(state.recipe.threads)
            for n in names
        }
        scores: dict[str, dict[str, SplitScores]] = {
            name: {
                split: state.task.kind.scores(
                    predict_with(runners[name], state.encoded(split), config.batch_size),
                    state.encoded(split),
                    state.task.labels,
                    seed=state.seed,
                )
                for split in config.splits
            }
            for name in names
        }
        kinds = {n: _kind(state, n) for n in names}
        timed = dict(runners)
        if config.latency and config.latency_reference and "teacher" in models:
            # the teacher in every deploy form a user gets without compress, and in every runtime a student here is
            # timed in
            runtimes = {*baseline_runtimes(), *(k[1] for k in kinds.values())}
            calib = lambda: openvino.calibration(state.encoded("train"))
            for target in [t for t in TARGETS.values() if t.runtime in runtimes]:
                name = form_name("teacher", target)
                if name not in timed:
                    variant = state.variants.get(name)
                    timed[name] = (
                        variant.runner(state.recipe.threads)
                        if variant
                        else cached_runner(models["teacher"], target, state.cache_dir, state.recipe.threads, calib)
                    )
                    kinds[name] = ("teacher", target.runtime, target.precision)
        if config.latency:
            timed = _on_latency_device(timed, kinds, models, config.latency_device, state.device)
        latency = self._latency(state, config, timed, kinds) if config.latency else {}
        natural = self._natural(state, config, timed, kinds) if config.latency and config.latency_natural else {}
        for name in dict.fromkeys([*names, *latency]):
            state.evaluations[name] = _form(
                state, name, kinds[name], scores.get(name, {}), latency.get(name), natural.get(name)
            )
        _print(state, names)
        return state

    def _latency(
        self, state: RunState, config: Config, runners: dict[str, Runner], kinds: dict[str, Kind]
    ) -> dict[str, Latency]:
        batch = real_inputs(
            state.tokenizer,
            state.task.splits["train"]["text"].tolist(),
            config.latency_batch,
            config.latency_seq,
            state.seed,
        )
        on_gpu = {n for n in runners if kinds[n][1] == "torch" and config.latency_device == "cuda"}
        timings = interleaved({n: partial(r, batch) for n, r in runners.items()}, runs=config.latency_runs, cuda=on_gpu)
        teacher = {n: t.p10_ms for n, t in timings.items() if kinds[n][0] == "teacher"}
        models, threads = state.models(), state.recipe.threads or torch.get_num_threads()
        out = {}
        for name, t in timings.items():
            origin = models[kinds[name][0]]
            out[name] = Latency.of(
                t,
                teacher,
                runtime=kinds[name][1],
                precision=kinds[name][2],
                device="cuda" if name in on_gpu else "cpu",
                batch=config.latency_batch,
                seq=config.latency_seq,
                threads=threads,
                params=count_parameters(origin),
                gflops=flops_per_sequence(origin.config, config.latency_seq) * config.latency_batch / 1e9,
            )
        if (reference := fastest(teacher)) is not None:
            log.info(
                "latency reference: the teacher's fastest form, %s (%.2f ms p10 at seq %d)",
                reference,
                teacher[reference],
                config.latency_seq,
            )
        return out

    def _natural(
        self, state: RunState, config: Config, runners: dict[str, Runner], kinds: dict[str, Kind]
    ) -> dict[str, NaturalLatency]:
        batches, tokens = single_batches(state.encoded("validation"), config.latency_natural, state.seed)
        return NaturalLatency.of(
            natural_lengths(runners, batches), [n for n in runners if kinds[n][0] == "teacher"], tokens
        )


def _on_latency_device(
    runners: dict[str, Runner],
    kinds: dict[str, Kind],
    models: Mapping[str, torch.nn.Module],
    latency_device: str,
    device: torch.device,
) -> dict[str, Runner]:
    """PyTorch forms as timed: on `latency_device`, from a copy when the model trains elsewhere (it stays where it
    is)."""
    if latency_device == "cuda" and not torch.cuda.is_available():
        raise CompressError("evaluate.latency_device is cuda but no CUDA GPU is visible; use latency_device: cpu")
    if device.type == latency_device:
        return runners
    moved = {n for n in runners if kinds[n][1] == "torch"}
    return {
        n: torch_runner(copy.deepcopy(models[kinds[n][0]]), latency_device) if n in moved else r
        for n, r in runners.items()
    }


def _kind(state: RunState, name: str) -> Kind:
    if name in state.variants:
        v = state.variants[name]
        return v.model, v.runtime, v.precision
    return name, "torch", "fp32"


def _form(
    state: RunState,
    name: str,
    kind: Kind,
    splits: dict[str, SplitScores],
    latency: Latency | None,
    natural: NaturalLatency | None,
) -> FormEval:
    """The form's record, keeping what an earlier evaluate pass measured and this one did not."""
    prev = state.evaluations.get(name)
    variant = state.variants.get(name)
    path = variant.path if variant else None
    return FormEval(
        form=name,
        model=kind[0],
        runtime=kind[1],
        precision=kind[2],
        path=str(path.relative_to(state.out_dir)) if path and path.is_relative_to(state.out_dir) else None,
        size_mb=path.stat().st_size / 2**20 if path and path.exists() else None,
        splits={**(prev.splits if prev else {}), **splits},
        latency=latency or (prev.latency if prev else None),
        natural=natural or (prev.natural if prev else None),
    )


def _print(state: RunState, names: list[str]) -> None:
    evals = [state.evaluations[n] for n in names]
    splits = list(dict.fromkeys(s for e in evals for s in e.splits))
    metric, other = state.task.metric, state.task.secondary
    table = Table(title="evaluation")
    table.add_column("model")
    for split in splits:
        table.add_column(f"{split} {metric} [95% CI]", justify="right")
        table.add_column(f"{split} {other}", justify="right")
    timed = any(e.latency for e in evals)
    if timed:
        table.add_column("latency ms p10 (median)", justify="right")
        table.add_column("x teacher's fastest", justify="right")
    for e in evals:
        cells = []
        for split in splits:
            r = e.splits.get(split)
            lo, hi = r.ci95[metric] if r else (0.0, 0.0)
            cells += [f"{r[metric]:.4f} [{lo:.3f}, {hi:.3f}]", f"{r[other]:.4f}"] if r else ["-", "-"]
        if timed:
            lat = e.latency
            cells += [
                f"{lat.p10_ms:.2f} ({lat.median_ms:.2f})" if lat else "-",
                f"{lat.speedup:.2f}" if lat and lat.speedup else "-",
            ]
        table.add_row(e.form, *cells)
    reference = next((e.latency.reference for e in evals if e.latency and e.latency.reference), None)
    if reference:
        table.caption = f"x teacher's fastest: against {reference}, timed in the same run (p10 of the per-call times)"
    Console(stderr=True, width=max(140, Console(stderr=True).width)).print(table)
