"""One trial of a study: the recipe with the sampled values, run, scored into a `TrialScore`.

The latency objective is the latency model's prediction for the trial's student in the study's target
(stable); the latency measured in the trial's own run is recorded beside it, for the report to show how
well the prediction holds.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from compress.core.arch import Architecture
from compress.core.errors import CompressError, Interrupted
from compress.core.frontier import TeacherReference, TrialScore
from compress.core.records import RunMetrics
from compress.deploy.flops import flops_per_sequence
from compress.deploy.latency_model import LatencyModel
from compress.deploy.targets import get_target
from compress.modeling.loading import load_config
from compress.pipeline.runner import run_recipe
from compress.pipeline.state import OnValidation
from compress.recipe import Recipe, parse_recipe, set_path
from compress.recipe.search import SearchSpec
from compress.study.space import suggest
from compress.study.storage import heartbeat

log = logging.getLogger(__name__)
CONSTRAINTS = ("accuracy_drop", "latency_budget")  # TrialScore.constraints, in this order


class TrialFailed(Exception):
    """A trial whose configuration failed (e.g. a pass rejected it): recorded, and the search goes on."""


def objective_values(score: TrialScore, objectives: Sequence[str]) -> tuple[float, ...]:
    """The study's objectives, in order: accuracy (validation), latency (predicted p10 ms), size (MB)."""
    value = {"accuracy": score.value, "latency": score.predicted_ms, "size": score.size_mb}
    return tuple(value[o] for o in objectives)


@dataclass
class Objective:
    """One trial: set the sampled values in the recipe, run it, score the student in the study's target. Holds what
    every trial of the study shares (a worker builds one and hands it to Optuna's optimize)."""

    recipe: Recipe
    spec: SearchSpec
    folder: Path  # the study folder: trials run in <folder>/trials/
    source: str  # the recipe's path, for messages
    teacher: TeacherReference
    predictor: LatencyModel
    storage: BaseStorage

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        values = {key: suggest(param, trial, key) for key, param in self.spec.space.items()}
        trial.set_user_attr("config", values)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        raw = self.recipe.raw(
            name=f"trial-{trial.number:04d}",
            output_dir=str(self.folder / "trials"),
            cache_dir=str(self.recipe.cache_path()),
        )
        for key, value in values.items():
            set_path(raw, key, value, f"search.space.{key}")
        log.info("trial %d: %s", trial.number, values)
        try:
            with heartbeat(trial, self.storage, self.spec.heartbeat_seconds):
                run = run_recipe(
                    parse_recipe(raw, f"{self.source} (trial {trial.number})"),
                    self.source,
                    on_validation=self._pruner(trial),
                )
            result = score(run.metrics, self.spec, self.teacher, run.folder, self.predictor)
        except Interrupted:
            raise
        except CompressError as e:
            trial.set_user_attr("error", str(e))
            log.warning("trial %d failed: %s", trial.number, e)
            raise TrialFailed(str(e)) from None
        trial.set_user_attr("score", result.model_dump(mode="json"))
        # read by NSGA-II and TPE (constrained domination)
        for name, value in zip(CONSTRAINTS, result.constraints, strict=True):
            trial.set_constraint(name, value)
        measured = (
            f", measured {result.latency.p10_ms:.2f} ms ({result.measured_speedup:.2f}x)"
            if result.latency and result.measured_speedup
            else ""
        )
        log.info(
            "trial %d: %s val %s %.4f, predicted %.2f ms (%.2fx the teacher's fastest form)%s%s",
            trial.number,
            result.form,
            result.metric,
            result.value,
            result.predicted_ms,
            result.predicted_speedup,
            measured,
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
                if (
                    other is not None
                    and other >= acc + self.spec.prune_margin
                    and t.user_attrs.get("gflops_seq128", float("inf")) <= gflops
                ):
                    trial.set_user_attr("pruned_by", t.number)
                    why = f"epoch {epoch}: val {self.teacher.metric} {acc:.4f}, "
                    why += f"trial {t.number} had {other:.4f} at no more GFLOPs"
                    log.info("trial %d pruned (%s)", trial.number, why)
                    raise optuna.TrialPruned(why)

        return on_validation


def score(
    metrics: RunMetrics, spec: SearchSpec, teacher: TeacherReference, run: Path, predictor: LatencyModel
) -> TrialScore:
    """The trial's result: its student in the study's target, with predicted and (when timed) measured latency."""
    target = get_target(spec.target)
    forms = [
        f
        for f in metrics.forms_of(spec.student).values()
        if (f.runtime, f.precision) == (target.runtime, target.precision)
    ]
    form = next((f for f in forms if "validation" in f.splits), None)
    if form is None:
        raise CompressError(
            f"the trial's evaluate pass did not score student {spec.student!r} in search.target {target.name} on "
            "validation; "
            "evaluate that form (evaluate.models) and keep search.student equal to convert.student"
        )
    arch = Architecture.of(load_config(str(run / "models" / spec.student)))
    predictor.extend([arch], target)
    predicted = predictor.predict(arch)
    fastest = teacher.fastest().latency
    reference = predictor.reference_ms() or (fastest.p10_ms if fastest else predicted)
    val = form.splits["validation"]
    params = form.latency.params if form.latency else 0
    size_mb = form.size_mb if form.size_mb is not None else params * (1 if form.precision == "int8" else 4) / 2**20
    # one slot per constraint, 0.0 when the recipe sets none (<= 0: satisfied), named as CONSTRAINTS
    constraints = [
        (teacher.score("validation") or 0.0) - spec.max_accuracy_drop - val[teacher.metric]
        if spec.max_accuracy_drop is not None
        else 0.0,
        predicted - spec.latency_budget_ms if spec.latency_budget_ms is not None else 0.0,
    ]
    return TrialScore(
        form=form.form,
        path=str(run),
        target=target.name,
        metric=teacher.metric,
        validation=val,
        test=form.splits.get("test"),
        predicted_ms=predicted,
        predicted_speedup=reference / predicted,
        # the trial's own timing is at the evaluate pass's padded shape: in a natural-length study it measures something
        # other than the prediction, so only the re-timed check (finalize.check_trials) compares them there
        latency=form.latency if spec.latency_shape == "padded" else None,
        size_mb=size_mb,
        arch=arch.model_dump(),
        constraints=constraints,
        feasible=all(c <= 0 for c in constraints),
    )
