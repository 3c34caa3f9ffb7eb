"""Measure accuracy and macro-F1 of every model and deployable variant, and optionally their latency."""

from __future__ import annotations

import fnmatch
import logging
from typing import Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt
from rich.console import Console
from rich.table import Table

from compress.latency import flops_per_sequence, interleaved, params, real_inputs
from compress.metrics import classification_report, predict_with
from compress.registry import Pass, PassConfig
from compress.state import RunState

log = logging.getLogger(__name__)


class Evaluate(Pass):
    """Accuracy and macro-F1 (95% bootstrap interval) of the teacher, students and their ONNX/int8 variants."""

    name = "evaluate"

    class Config(PassConfig):
        splits: list[Literal["validation", "test"]] = ["validation", "test"]
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
        wanted = None if config.models is None else [m for p in config.models for m in (fnmatch.filter(available, p) if any(c in p for c in "*?[") else [p])]
        names = state.pick(wanted, available, "evaluate.models")
        # Build runners only for what is evaluated (each ONNX variant opens a session).
        runners = {n: _torch_runner(models[n], state.device) if n in models else state.variants[n].runner(state.recipe.threads) for n in names}
        timed = dict(runners)
        if config.latency and config.latency_reference and "teacher" in models and "teacher" not in runners:
            timed["teacher"] = _torch_runner(models["teacher"], state.device)  # timed only, as the speed reference
        results = state.metrics.setdefault(self.name, {})
        for name in names:
            results[name] = {
                split: classification_report(predict_with(runners[name], state.encoded(split), config.batch_size),
                                             state.encoded(split).labels, len(state.task.labels), seed=state.seed)
                for split in config.splits
            }
        if config.latency:
            self._latency(state, config, timed, results)
        _print(results, config.splits, names)
        return state

    def _latency(self, state: RunState, config: Config, runners: dict, results: dict) -> None:
        feeds = real_inputs(state.tokenizer, config.latency_batch, config.latency_seq, state.seed)
        batch = {k: torch.from_numpy(v) for k, v in feeds.items()}
        with torch.no_grad():
            timings = interleaved({n: (lambda r=r: r(batch)) for n, r in runners.items()}, runs=config.latency_runs)
        models = state.models()
        base = timings.get("teacher")
        for name, t in timings.items():
            origin = models[state.variants[name].model] if name in state.variants else models[name]
            gflops = flops_per_sequence(origin.config, config.latency_seq) * config.latency_batch / 1e9
            results.setdefault(name, {})["latency"] = t.as_dict() | {
                "batch": config.latency_batch, "seq": config.latency_seq, "threads": state.recipe.threads or torch.get_num_threads(),
                "gflops": gflops, "gflops_per_s": gflops / (t.median_ms / 1000), "params": params(origin),
                "speedup_vs_teacher": (base.median_ms / t.median_ms) if base else None,
            }


def _torch_runner(model: torch.nn.Module, device: torch.device):
    model.eval().to(device)

    @torch.no_grad()
    def run(b: dict[str, torch.Tensor]) -> np.ndarray:
        return model(**{k: b[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")}).logits.float().cpu().numpy()

    return run


def _print(results: dict, splits: list[str], names: list[str]) -> None:
    table = Table(title="evaluation")
    table.add_column("model")
    for split in splits:
        table.add_column(f"{split} acc [95% CI]", justify="right")
        table.add_column(f"{split} macro-F1", justify="right")
    timed = any("latency" in results[n] for n in names)
    if timed:
        table.add_column("latency ms (p90)", justify="right")
        table.add_column("x teacher", justify="right")
    for name in names:
        cells = []
        for split in splits:
            r = results[name][split]
            lo, hi = r["accuracy_ci95"]
            cells += [f"{r['accuracy']:.4f} [{lo:.3f}, {hi:.3f}]", f"{r['macro_f1']:.4f}"]
        if timed:
            lat = results[name].get("latency", {})
            cells += [f"{lat.get('median_ms', float('nan')):.1f} ({lat.get('p90_ms', float('nan')):.1f})",
                      f"{lat['speedup_vs_teacher']:.2f}" if lat.get("speedup_vs_teacher") else "-"]
        table.add_row(name, *cells)
    Console(stderr=True, width=max(140, Console(stderr=True).width)).print(table)

