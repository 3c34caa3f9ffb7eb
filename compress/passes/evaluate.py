"""Measure accuracy and macro-F1 of every model in the run, with bootstrap intervals."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field, PositiveInt
from rich.console import Console
from rich.table import Table

from compress.errors import CompressError
from compress.metrics import classification_report, predict
from compress.registry import Pass, PassConfig
from compress.state import RunState

log = logging.getLogger(__name__)


class Evaluate(Pass):
    """Accuracy and macro-F1 (95% bootstrap interval) of the teacher and each student on validation and test."""

    name = "evaluate"

    class Config(PassConfig):
        splits: list[Literal["validation", "test"]] = ["validation", "test"]
        models: list[str] | None = Field(None, description="names to evaluate; default: teacher and all students")
        batch_size: PositiveInt = 64

    def run(self, state: RunState, config: Config) -> RunState:
        models = state.models()
        names = config.models or list(models)
        unknown = [n for n in names if n not in models]
        if unknown:
            raise CompressError(f"evaluate.models names {unknown}, but this run has {list(models)}")
        results = state.metrics.setdefault(self.name, {})
        for name in names:
            results[name] = {
                split: classification_report(
                    predict(models[name], state.encoded(split), state.device, config.batch_size),
                    state.encoded(split).labels,
                    len(state.task.labels),
                    seed=state.seed,
                )
                for split in config.splits
            }
        table = Table(title="evaluation")
        table.add_column("model")
        for split in config.splits:
            table.add_column(f"{split} acc [95% CI]", justify="right")
            table.add_column(f"{split} macro-F1", justify="right")
        for name in names:
            cells = []
            for split in config.splits:
                r = results[name][split]
                lo, hi = r["accuracy_ci95"]
                cells += [f"{r['accuracy']:.4f} [{lo:.3f}, {hi:.3f}]", f"{r['macro_f1']:.4f}"]
            table.add_row(name, *cells)
        Console(stderr=True).print(table)
        return state
