"""One trial of a study: the recipe with the sampled values, run, scored into a `TrialScore`."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import optuna
from optuna.trial import TrialState

from compress.convert.groups import Groups
from compress.core.errors import CompressError, Interrupted
from compress.core.records import RunMetrics, TeacherReference, TrialScore
from compress.deploy.flops import flops_per_sequence
from compress.pipeline.runner import run_recipe
from compress.pipeline.state import OnValidation
from compress.recipe import Recipe, parse_recipe, set_path
from compress.recipe.search import SearchSpec
from compress.search.space import suggest

log = logging.getLogger(__name__)


class TrialFailed(Exception):
    """A trial whose configuration failed (e.g. a pass rejected it): recorded, and the search goes on."""


def objective_values(score: TrialScore, objectives: Sequence[str]) -> tuple[float, ...]:
    """The study's objectives, in order: accuracy (validation), latency (ms), size (MB)."""
    value = {"accuracy": score.validation["accuracy"], "latency": score.latency.median_ms, "size": score.size_mb}
    return tuple(value[o] for o in objectives)


class Objective:
    """One trial: set the sampled values in the recipe, run it, score its fastest form of the student."""

    def __init__(self, recipe: Recipe, spec: SearchSpec, folder: Path, source: str, teacher: TeacherReference) -> None:
        self.recipe, self.spec, self.folder, self.source, self.teacher = recipe, spec, folder, source, teacher

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        values = {key: suggest(param, trial, key) for key, param in self.spec.space.items()}
        trial.set_user_attr("config", values)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        raw = self.recipe.raw(name=f"trial-{trial.number:04d}", output_dir=str(self.folder / "trials"), cache_dir=str(self.recipe.cache_path()))
        for key, value in values.items():
            set_path(raw, key, value, f"search.space.{key}")
        log.info("trial %d: %s", trial.number, values)
        try:
            run = run_recipe(parse_recipe(raw, f"{self.source} (trial {trial.number})"), self.source, on_validation=self._pruner(trial))
            result = score(run.metrics, self.spec, self.teacher, run.folder)
        except Interrupted:
            raise
        except CompressError as e:
            trial.set_user_attr("error", str(e))
            log.warning("trial %d failed: %s", trial.number, e)
            raise TrialFailed(str(e)) from None
        trial.set_user_attr("score", result.model_dump(mode="json"))
        trial.set_user_attr("constraints", result.constraints)
        log.info(
            "trial %d: %s val acc %.4f, %.2f ms (%.2fx teacher)%s",
            trial.number,
            result.form,
            result.validation["accuracy"],
            result.latency.median_ms,
            result.speedup,
            "" if result.feasible else ", infeasible",
        )
        return objective_values(result, self.spec.objectives)

    def _pruner(self, trial: optuna.Trial) -> OnValidation:
        """Optuna's pruners are single-objective (Trial.report raises in multi-objective studies), so this goes
        beyond them: a trial stops when a finished trial that was no more expensive (GFLOPs) had a validation
        accuracy at least `prune_margin` higher at the same epoch - it cannot end up on the front's better side."""
        curve: dict[str, float] = {}

        def on_validation(model: str, epoch: float, acc: float, module) -> None:
            if model != self.spec.student:
                return
            gflops = flops_per_sequence(module.config, 128) / 1e9
            curve[str(epoch)] = acc
            trial.set_user_attr("val_curve", curve)
            trial.set_user_attr("gflops_seq128", gflops)
            if not self.spec.prune:
                return
            finished = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if len(finished) < self.spec.startup_trials:
                return
            for t in finished:
                other = t.user_attrs.get("val_curve", {}).get(str(epoch))
                if other is not None and other >= acc + self.spec.prune_margin and t.user_attrs.get("gflops_seq128", float("inf")) <= gflops:
                    trial.set_user_attr("pruned_by", t.number)
                    why = f"epoch {epoch}: val acc {acc:.4f}, trial {t.number} had {other:.4f} at no more GFLOPs"
                    log.info("trial %d pruned (%s)", trial.number, why)
                    raise optuna.TrialPruned(why)

        return on_validation


def score(metrics: RunMetrics, spec: SearchSpec, teacher: TeacherReference, run: Path) -> TrialScore:
    """The trial's result: its fastest timed form of the student, with what the report shows of it."""
    s = spec.student
    forms = [f for f in metrics.forms_of(s).values() if f.latency is not None and "validation" in f.splits]
    if not forms:
        raise CompressError(
            f"the trial's evaluate pass did not time student {s!r} on validation; give evaluate latency: true and "
            f"splits including validation, and keep search.student equal to convert.student"
        )
    best = min(forms, key=lambda f: f.latency.median_ms if f.latency else float("inf"))
    lat = best.latency
    assert lat is not None
    config = SimpleNamespace(**json.loads((run / "models" / s / "config.json").read_text()))
    size_mb = best.size_mb if best.size_mb is not None else lat.params * (1 if best.precision == "int8" else 4) / 2**20
    val = best.splits["validation"]
    constraints = []
    if spec.max_accuracy_drop is not None:
        constraints.append(teacher.validation["accuracy"] - spec.max_accuracy_drop - val["accuracy"])
    if spec.latency_budget_ms is not None:
        constraints.append(lat.median_ms - spec.latency_budget_ms)
    constraints = constraints or [0.0]
    return TrialScore(
        form=best.form,
        path=str(run),
        validation=val,
        test=best.splits.get("test"),
        latency=lat,
        speedup=lat.speedup or teacher.latency_ms / lat.median_ms,
        size_mb=size_mb,
        layers=config.num_hidden_layers,
        intermediate_size=config.intermediate_size,
        groups=str(Groups.of(config)),
        constraints=constraints,
        feasible=all(c <= 0 for c in constraints),
    )
