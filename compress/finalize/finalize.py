"""`compress finalize STUDY`: the front, retrained and timed honestly.

    proxy trials -> distinct front students (spread along the front) -> retrained at full budget
    peer baselines (search.baselines) -> trained with the same budget
    each of them -> also built in every deploy form the teacher is timed in (compress.finalize.forms)
    teacher forms + final students + baselines -> one interleaved, repeated timing run -> final/frontier.json
    each final student vs each rival (teacher forms, baselines) -> paired test differences (compress.finalize.paired)

Each retraining is an ordinary run (`final/final-NNNN/`, `baselines/baseline-<name>/`) and is skipped when a
finished one with the same resolved recipe exists, so an interrupted finalize resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from compress.core.arch import Architecture
from compress.core.atomic import atomic_write_json
from compress.core.errors import CompressError
from compress.core.frontier import BudgetUse, Frontier, TrialTiming
from compress.core.records import read_metrics
from compress.deploy.forms import evaluated_forms
from compress.deploy.latency_model import agreement
from compress.deploy.targets import get_target
from compress.finalize.forms import add_forms, teacher_targets
from compress.finalize.front import Trials, challengers, latency_error, pick, spread
from compress.finalize.paired import closest, compare
from compress.finalize.timing import Entry, time_frontier, time_trials
from compress.modeling.loading import load_config
from compress.pipeline.runner import run_recipe
from compress.recipe import Recipe, parse_recipe, set_path
from compress.recipe.baselines import baseline_passes
from compress.recipe.search import SearchSpec
from compress.study.info import read_info, scored_trials
from compress.study.latency import latency_model, model_path

log = logging.getLogger(__name__)


def finalize(
    folder: Path, top_k: int | None = None, *, retime: bool = False, out: Path | None = None, storage: str | None = None
) -> Path:
    """Retrain the front (unless `retime`), then time it with the baselines and the teacher; returns frontier.json."""
    folder = Path(folder).resolve()  # runs are reused by their resolved recipe, which holds this path: spell it one way
    info = read_info(folder)
    recipe = info.load_recipe()
    assert recipe.search is not None
    spec = recipe.search
    trials = scored_trials(info, storage)
    if not trials:
        raise CompressError(
            f"study {info.study!r} has no finished trial to finalize; run compress search (or --resume) until one "
            "finishes"
        )
    if not any(s.feasible for _, s in trials):
        log.warning("no proxy trial is feasible (search.max_accuracy_drop / latency_budget_ms): finalizing among all")
    budget = Budget(spec.finalize.timeout)
    # baselines first: the students meant to beat them are chosen by their latency
    peers = _baselines(folder, recipe, spec, retime)
    entries = [
        Entry("teacher", "teacher", None, folder / "reference", False, "teacher"),
        *_finals(folder, recipe, spec, trials, peers, top_k or spec.finalize.top_k or 1, retime, budget),
        *peers,
    ]
    if spec.finalize.forms == "all":
        entries = _every_form(entries, recipe.threads)
    path = out or folder / "final" / "frontier.json"
    if not retime and not any(e.fresh for e in entries) and path.is_file():
        old = Frontier.model_validate(json.loads(path.read_text()))
        timed = [(e.name, e.path, sorted(e.forms)) for e in old.entries]
        if timed == [(e.name, str(e.run), sorted(evaluated_forms(e.run, e.model))) for e in entries]:
            log.info(
                "final students, baselines and their timing are unchanged since %s; --retime times them again", path
            )
            _upgrade(path, old, folder, recipe, spec, trials)
            return path
    frontier: Frontier = compare(recipe, time_frontier(recipe, spec, entries), recipe.seed)
    frontier = frontier.model_copy(update={"trials": _check(folder, recipe, spec, trials), "budget": budget.record()})
    atomic_write_json(path, frontier.model_dump(mode="json"))
    _log(frontier, trials[0][1].metric)
    return path


class Budget:
    """finalize.timeout: no retraining starts once this many seconds have passed (None: no limit). The first piece
    of work is always admitted, so a finalize under any budget still has a student to report."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock, self.admitted, self.skipped = seconds, clock, 0, 0
        self.start = clock()

    def admit(self, what: str) -> bool:
        """Whether `what` may start now; a refusal is counted and said."""
        if self.admitted and self.seconds is not None and self.clock() - self.start >= self.seconds:
            self.skipped += 1
            log.warning("%s not retrained: the finalize budget (finalize.timeout %gs) is spent", what, self.seconds)
            return False
        self.admitted += 1
        return True

    def record(self) -> BudgetUse | None:
        if self.seconds is None:
            return None
        return BudgetUse(seconds=self.seconds, used_s=round(self.clock() - self.start, 1), skipped=self.skipped)


def _baselines(folder: Path, recipe: Recipe, spec: SearchSpec, retime: bool) -> list[Entry]:
    """The peer baselines (search.baselines), each trained with the final students' budget (or reused)."""
    teacher_layers = load_config(str(folder / "reference" / "models" / "teacher")).num_hidden_layers
    peers = []
    for b in spec.baselines:
        raw = recipe.raw(
            name=f"baseline-{b.name}", output_dir=str(folder / "baselines"), cache_dir=str(recipe.cache_path())
        )
        raw["passes"] = baseline_passes(b, raw["passes"], teacher_layers, spec.student)
        peers.append(Entry(b.name, "baseline", None, *_run(raw, spec.finalize.set, retime), spec.student))
    return peers


def _finals(
    folder: Path,
    recipe: Recipe,
    spec: SearchSpec,
    trials: Trials,
    peers: list[Entry],
    k: int,
    retime: bool,
    budget: Budget,
) -> list[Entry]:
    """The chosen proxy students retrained at full budget: `k` of the front (finalize.pick), then one challenger per
    baseline (finalize.cover_baselines); each in order of predicted latency, while `budget` lasts."""
    chosen = dict(pick(trials, k, spec.finalize.pick))
    against: dict[int, list[str]] = {}
    if spec.finalize.cover_baselines and peers:
        found = challengers(trials, _predicted(folder, recipe, spec, peers), latency_error(trials))
        for name, (number, score) in found.items():
            chosen[number] = score
            against.setdefault(number, []).append(name)
    out: list[Entry] = []
    for number, score in sorted(chosen.items(), key=lambda t: t[1].predicted_ms):
        name = f"final-{number:04d}"
        if not budget.admit(name):
            continue
        raw = yaml.safe_load((Path(score.path) / "recipe.yaml").read_text())
        run, fresh = _run(raw | {"name": name, "output_dir": str(folder / "final")}, spec.finalize.set, retime)
        out.append(Entry(name, "final", number, run, fresh, spec.student, tuple(against.get(number, ()))))
    return out


def _every_form(entries: list[Entry], threads: int | None) -> list[Entry]:
    """Each final student and baseline also in every deploy form the teacher is timed in (compress.finalize.forms);
    an entry that gained a form is timed again."""
    targets = teacher_targets(entries[0].run)
    out = []
    for e in entries:
        added = add_forms(e.run, e.model, targets, threads) if e.kind != "teacher" else []
        out.append(dataclasses.replace(e, fresh=True) if added else e)
    return out


def _predicted(folder: Path, recipe: Recipe, spec: SearchSpec, peers: list[Entry]) -> dict[str, float]:
    """The latency model's prediction for each trained baseline: the same scale the trials were scored on."""
    model, target = latency_model(folder, recipe, spec), get_target(spec.target)
    archs = {e.name: Architecture.of(load_config(str(e.run / "models" / e.model))) for e in peers}
    if model.extend(archs.values(), target):  # e.g. pruned head counts no trial had: timed once and kept with the
        model.save(model_path(folder, spec))  # model, so a resumed finalize predicts (and picks challengers) alike
    return {name: model.predict(arch) for name, arch in archs.items()}


def _upgrade(path: Path, old: Frontier, folder: Path, recipe: Recipe, spec: SearchSpec, trials: Trials) -> None:
    """A frontier written by a compress without paired comparisons or the latency model's check: those are added,
    its timing kept."""
    new = old
    if any(e.kind == "final" and not e.paired for e in old.entries):
        new = compare(recipe, new, recipe.seed)
    if not new.trials and spec.finalize.check_trials:
        new = new.model_copy(update={"trials": _check(folder, recipe, spec, trials)})
    if new is not old:
        atomic_write_json(path, new.model_dump(mode="json"))


def _log(frontier: Frontier, metric: str) -> None:
    ref = frontier.reference
    for e in frontier.entries:
        best, lat = e.best(), e.best().latency
        test = f"{best.splits['test'][metric]:.4f}" if "test" in best.splits else "-"
        if lat is not None:
            speedup = lat.speedup or 0
            log.info(
                "%s: %s %.2f ms (p10) = %.2fx %s, test %s %s", e.name, best.form, lat.p10_ms, speedup, ref, metric, test
            )
    for rival, c in closest(frontier).items():
        log.info(
            "%s: %s, the most accurate final student as fast, %+.4f %s (paired 95%% CI %+.4f, %+.4f)",
            *(rival, c.student, c.diff, metric, *c.ci95),
        )


def _check(folder: Path, recipe: Recipe, spec: SearchSpec, trials: Trials) -> list[TrialTiming]:
    """The latency model's check: up to finalize.check_trials proxy trials, spread along the predicted latency,
    re-timed beside the teacher's forms (compress.finalize.timing.time_trials)."""
    k = spec.finalize.check_trials
    if k == 0:
        return []
    chosen = spread(sorted(trials, key=lambda t: t[1].predicted_ms), k)
    timed = time_trials(recipe, spec, folder / "reference", chosen)
    if len(timed) < 2:
        log.info("latency model check skipped: fewer than two finished trials still have their student on disk")
        return timed
    rho, err = agreement([t.predicted_speedup for t in timed], [t.speedup for t in timed])
    own = [s for _, s in chosen if s.measured_speedup]
    also = ""
    if len(own) >= 2:  # trials timed in their own runs too (evaluate.latency): that figure beside it
        rho_own, err_own = agreement([s.predicted_speedup for s in own], [s.measured_speedup or 0.0 for s in own])
        also = f" (each in its own run: {rho_own:.3f}, {100 * err_own:.1f}%)"
    log.info(
        "latency model on %d proxy trials re-timed together: rank correlation %.3f, median |error| %.1f%%%s",
        *(len(timed), rho, 100 * err, also),
    )
    return timed


def _run(raw: dict[str, Any], overrides: dict[str, Any], retime: bool) -> tuple[Path, bool]:
    """Run (or reuse) a final run: the recipe with the full-budget overrides; a finished run of the same recipe is kept.
    Returns (its folder, whether it was trained now)."""
    for key, value in overrides.items():
        set_path(raw, key, value, f"search.finalize.set.{key}")
    recipe = parse_recipe(raw, f"finalize ({raw['name']})")
    folder = Path(recipe.output_dir) / recipe.name
    saved = folder / "recipe.yaml"
    same = saved.is_file() and yaml.safe_load(saved.read_text()) == recipe.model_dump(mode="json")
    if same and read_metrics(folder / "metrics.json").status == "complete":
        log.info("%s: finished before, reused", recipe.name)
        return folder, False
    if retime:
        raise CompressError(
            f"{folder} is not a finished final run of this study; run compress finalize without --retime first"
        )
    how = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the recipe as is"
    log.info("%s: training at full budget (%s)", recipe.name, how)
    return run_recipe(recipe, f"finalize ({recipe.name})").folder, True
