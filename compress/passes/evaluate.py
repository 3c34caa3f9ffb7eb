"""Measure accuracy and macro-F1 of every model and deployable variant, and optionally their latency."""

from __future__ import annotations

import fnmatch
import logging
from functools import partial
from typing import Literal

import torch
from pydantic import Field, PositiveInt
from rich.console import Console
from rich.table import Table

from compress.core.records import FormEval, Latency, SplitScores
from compress.deploy.flops import flops_per_sequence
from compress.deploy.latency import interleaved, real_inputs
from compress.modeling.runners import (
    Runner,
    count_parameters,
    predict_with,
    torch_runner,
)
from compress.pipeline.registry import Pass, PassConfig
from compress.pipeline.state import RunState
from compress.tasks.classification import classification_scores

log = logging.getLogger(__name__)


class Evaluate(Pass):
    """Accuracy and macro-F1 (95% bootstrap interval) of the teacher, students and their ONNX/int8 variants."""

    name = "evaluate"

    class Config(PassConfig):
        splits: tuple[Literal["validation", "test"], ...] = ("validation", "test")
        models: list[str] | None = Field(None, description="models/variants to evaluate, glob patterns allowed (student*); default: all")
        batch_size: PositiveInt = 64
        latency: bool = Field(False, description="also time each one (interleaved, median of latency_runs)")
        latency_batch: PositiveInt = 1
        latency_seq: int = Field(128, ge=8, le=512)
        latency_runs: int = Field(30, ge=5)
        latency_reference: bool = Field(True, description="time the teacher alongside (speedup_vs_teacher) even when models leaves it out")

    def run(self, state: RunState, config: Config) -> RunState:
        models = state.models()
        available = {**models, **state.variants}
        wanted = (
            None
            if config.models is None
            else [m for p in config.models for m in (fnmatch.filter(available, p) if any(c in p for c in "*?[") else [p])]
        )
        names = state.pick(wanted, available, "evaluate.models")
        # Build runners only for what is evaluated (each ONNX variant opens a session).
        runners = {n: torch_runner(models[n], state.device) if n in models else state.variants[n].runner(state.recipe.threads) for n in names}
        timed = dict(runners)
        if config.latency and config.latency_reference and "teacher" in models and "teacher" not in runners:
            timed["teacher"] = torch_runner(models["teacher"], state.device)  # timed only, as the speed reference
        scores: dict[str, dict[str, SplitScores]] = {
            name: {
                split: classification_scores(
                    predict_with(runners[name], state.encoded(split), config.batch_size),
                    state.encoded(split).labels,
                    len(state.task.labels),
                    seed=state.seed,
                )
                for split in config.splits
            }
            for name in names
        }
        latency = self._latency(state, config, timed) if config.latency else {}
        for name in dict.fromkeys([*names, *latency]):
            state.evaluations[name] = _form(state, name, scores.get(name, {}), latency.get(name))
        _print(state, names)
        return state

    def _latency(self, state: RunState, config: Config, runners: dict[str, Runner]) -> dict[str, Latency]:
        batch = real_inputs(state.tokenizer, state.task.splits["train"]["text"].tolist(), config.latency_batch, config.latency_seq, state.seed)
        on_gpu = {n for n in runners if n in state.models() and state.device.type == "cuda"}
        timings = interleaved({n: partial(r, batch) for n, r in runners.items()}, runs=config.latency_runs, cuda=on_gpu)
        models, base = state.models(), timings.get("teacher")
        out = {}
        for name, t in timings.items():
            origin = models[state.origin(name)]
            runtime, precision = _kind(state, name)
            out[name] = Latency(
                runtime=runtime,
                precision=precision,
                device="cuda" if name in on_gpu else "cpu",
                batch=config.latency_batch,
                seq=config.latency_seq,
                threads=state.recipe.threads or torch.get_num_threads(),
                median_ms=t.median_ms,
                p90_ms=t.p90_ms,
                iqr_ms=t.iqr_ms,
                cv=t.cv,
                runs=t.runs,
                params=count_parameters(origin),
                gflops=flops_per_sequence(origin.config, config.latency_seq) * config.latency_batch / 1e9,
                reference="teacher" if base else None,
                speedup=base.median_ms / t.median_ms if base else None,
            )
        return out


def _kind(state: RunState, name: str) -> tuple[str, str]:
    """(runtime, precision) of a model or variant."""
    if name in state.variants:
        return state.variants[name].runtime, state.variants[name].precision
    return "torch", "fp32"


def _form(state: RunState, name: str, splits: dict[str, SplitScores], latency: Latency | None) -> FormEval:
    """The form's record, keeping what an earlier evaluate pass measured and this one did not."""
    prev = state.evaluations.get(name)
    variant = state.variants.get(name)
    path = variant.path if variant else None
    runtime, precision = _kind(state, name)
    return FormEval(
        form=name,
        model=state.origin(name),
        runtime=runtime,
        precision=precision,
        path=str(path.relative_to(state.out_dir)) if path and path.is_relative_to(state.out_dir) else None,
        size_mb=path.stat().st_size / 2**20 if path and path.exists() else None,
        splits={**(prev.splits if prev else {}), **splits},
        latency=latency or (prev.latency if prev else None),
    )


def _print(state: RunState, names: list[str]) -> None:
    evals = [state.evaluations[n] for n in names]
    splits = list(dict.fromkeys(s for e in evals for s in e.splits))
    table = Table(title="evaluation")
    table.add_column("model")
    for split in splits:
        table.add_column(f"{split} acc [95% CI]", justify="right")
        table.add_column(f"{split} macro-F1", justify="right")
    timed = any(e.latency for e in evals)
    if timed:
        table.add_column("latency ms (p90)", justify="right")
        table.add_column("x teacher", justify="right")
    for e in evals:
        cells = []
        for split in splits:
            r = e.splits.get(split)
            lo, hi = r.ci95["accuracy"] if r else (0.0, 0.0)
            cells += [f"{r['accuracy']:.4f} [{lo:.3f}, {hi:.3f}]", f"{r['macro_f1']:.4f}"] if r else ["-", "-"]
        if timed:
            lat = e.latency
            cells += [f"{lat.median_ms:.1f} ({lat.p90_ms:.1f})" if lat else "-", f"{lat.speedup:.2f}" if lat and lat.speedup else "-"]
        table.add_row(e.form, *cells)
    Console(stderr=True, width=max(140, Console(stderr=True).width)).print(table)
