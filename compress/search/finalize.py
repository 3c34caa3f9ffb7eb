"""`compress finalize STUDY`: the front, retrained and timed honestly.

    proxy trials -> distinct front students (spread along the front) -> retrained at full budget
    peer baselines (search.baselines) -> trained with the same budget
    teacher forms + final students + baselines -> one interleaved, repeated timing run -> final/frontier.json
    each final student vs each rival (teacher forms, baselines) -> paired test differences (compress.search.paired)

Each retraining is an ordinary run (`final/final-NNNN/`, `baselines/baseline-<name>/`) and is skipped when a
finished one with the same resolved recipe exists, so an interrupted finalize resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

from compress.core.atomic import atomic_write_json
from compress.core.errors import CompressError
from compress.core.records import Frontier, TrialScore, TrialTiming, read_metrics
from compress.deploy.blocks import Architecture
from compress.deploy.latency_model import agreement
from compress.deploy.targets import get_target
from compress.modeling.loading import load_config
from compress.pipeline.runner import run_recipe
from compress.recipe import Recipe, load_recipe, parse_recipe, set_path
from compress.recipe.search import SearchSpec
from compress.search.baselines import baseline_passes
from compress.search.paired import closest, compare
from compress.search.predictor import latency_model, model_path
from compress.search.storage import reopen
from compress.search.timing import Entry, time_frontier, time_trials

log = logging.getLogger(__name__)


def study_info(folder: Path) -> tuple[dict[str, Any], Recipe]:
    """search.json of a study folder and its recipe (with the study's overrides)."""
    info_path = Path(folder) / "search.json"
    if not info_path.is_file():
        raise CompressError(f"{folder}: not a study folder (no search.json); run compress search first, or pass results/<study>")
    info = json.loads(info_path.read_text())
    return info, load_recipe(info["recipe"], info.get("overrides"))


def scored_trials(info: dict[str, Any], storage: str | None = None) -> list[tuple[int, TrialScore]]:
    study = optuna.load_study(study_name=info["study"], storage=reopen(info["storage"], storage))
    done = optuna.trial.TrialState.COMPLETE
    return [(t.number, TrialScore.model_validate(t.user_attrs["score"])) for t in study.trials if t.state == done and "score" in t.user_attrs]


def candidates(trials: list[tuple[int, TrialScore]]) -> list[tuple[int, TrialScore]]:
    """The trials finalize chooses from: the feasible ones, or every one when none is (brief proxies can all miss
    max_accuracy_drop, and full-budget retraining often recovers it; finalize says so)."""
    return [(n, s) for n, s in trials if s.feasible] or trials


def pick(trials: list[tuple[int, TrialScore]], k: int) -> list[tuple[int, TrialScore]]:
    """Up to `k` distinct architectures of the feasible front (validation accuracy vs predicted latency),
    spread evenly along it from the fastest to the most accurate (one: its middle)."""
    ok = candidates(trials)
    front = [(n, s) for n, s in ok if not any(_dominates(o, s) for _, o in ok)]
    distinct: dict[str, tuple[int, TrialScore]] = {}
    for n, s in sorted(front, key=lambda t: -t[1].value):
        distinct.setdefault(json.dumps(s.arch, sort_keys=True), (n, s))
    return spread(sorted(distinct.values(), key=lambda t: t[1].predicted_ms), k)


def spread(ordered: list[Any], k: int) -> list[Any]:
    """Up to `k` of `ordered`, evenly spaced from its first to its last (one: its middle)."""
    if len(ordered) <= k:
        return ordered
    at = [len(ordered) // 2] if k == 1 else np.round(np.linspace(0, len(ordered) - 1, k)).astype(int).tolist()
    return [ordered[i] for i in sorted(set(at))]


def challengers(trials: list[tuple[int, TrialScore]], peers: dict[str, float], margin: float = 0.0) -> dict[str, tuple[int, TrialScore]]:
    """For each peer baseline (name -> its predicted latency): the candidate proxy student meant to beat it.

    Among the candidates predicted at least `margin` (relative) faster than the baseline, those whose validation
    score is within one standard error of the best one's (from its bootstrap interval) are tied, and the slowest of
    them is chosen. Why: at the top, brief proxies differ by noise (1,000 validation texts: about 1.4 pt), and a
    one-epoch proxy under-rates a larger student, which gains the most from full-budget training; so the
    challenger is the largest of the best students that is still surely no slower than the baseline (`margin`:
    the latency model's typical error). Baselines no student is fast enough for are left out."""
    out = {}
    for name, ms in peers.items():
        faster = [(n, s) for n, s in candidates(trials) if s.predicted_ms <= ms * (1 - margin)]
        if not faster:
            log.info("baseline %s (predicted %.2f ms): no proxy student predicted %.0f%% faster; none retrained against it", name, ms, 100 * margin)
            continue
        best = max(faster, key=lambda t: t[1].value)[1]
        lo, hi = best.validation.ci95.get(best.metric, (best.value, best.value))
        tied = [(n, s) for n, s in faster if s.value >= best.value - (hi - lo) / 3.92]
        out[name] = max(tied, key=lambda t: (t[1].predicted_ms, t[1].value))
        n, s = out[name]
        log.info(
            "baseline %s (predicted %.2f ms): challenger trial %d (predicted %.2f ms, validation %.4f; %d tied with the best %.4f)",
            name, ms, n, s.predicted_ms, s.value, len(tied), best.value,
        )  # fmt: skip
    return out


def latency_error(trials: list[tuple[int, TrialScore]]) -> float:
    """The latency model's typical relative error between two architectures, over the trials timed in their own runs
    (0 with fewer than two): the median absolute deviation of log(predicted / measured speed-up) from its median.

    Speed-ups, not milliseconds: each trial's is against the teacher timed beside it, which cancels how fast this
    shared machine happened to be at that minute (seen: one student measured 5.46 ms for a predicted 3.26, its
    speed-up 1.36 for a predicted 1.97, while the typical trial was within 10%). The median ratio is a bias common
    to every architecture (seen: every trial's one timing series read students ~20% slower than the model, which
    predicted the repeated final timing run within ~4%), so to a student and the baseline it is compared with;
    only the spread around it can put a student on the wrong side of a baseline."""
    ratios = [s.predicted_speedup / s.measured_speedup for _, s in trials if s.measured_speedup]
    if len(ratios) < 2:
        return 0.0
    r = np.log(ratios)
    return float(np.expm1(np.median(np.abs(r - np.median(r)))))


def _predicted(folder: Path, recipe: Recipe, spec: SearchSpec, peers: list[Entry]) -> dict[str, float]:
    """The latency model's prediction for each trained baseline: the same scale the trials were scored on."""
    model, target = latency_model(folder, recipe, spec), get_target(spec.target)
    archs = {e.name: Architecture.of(load_config(str(e.run / "models" / e.model))) for e in peers}
    if model.extend(archs.values(), target):  # e.g. pruned head counts no trial had: timed once and kept with the
        model.save(model_path(folder, spec))  # model, so a resumed finalize predicts (and picks challengers) the same way
    return {name: model.predict(arch) for name, arch in archs.items()}


def _dominates(a: TrialScore, b: TrialScore) -> bool:
    better_or_equal = a.value >= b.value and a.predicted_ms <= b.predicted_ms
    return better_or_equal and (a.value > b.value or a.predicted_ms < b.predicted_ms)


def finalize(folder: Path, top_k: int | None = None, *, retime: bool = False, out: Path | None = None, storage: str | None = None) -> Path:
    """Retrain the front (unless `retime`), then time it with the baselines and the teacher; returns frontier.json."""
    folder = Path(folder).resolve()  # runs are reused by their resolved recipe, which holds this path: spell it one way
    info, recipe = study_info(folder)
    assert recipe.search is not None
    spec = recipe.search
    k = top_k or spec.finalize.top_k or 1
    trials = scored_trials(info, storage)
    if not trials:
        raise CompressError(f"study {info['study']!r} has no finished trial to finalize; run compress search (or --resume) until one finishes")
    if not any(s.feasible for _, s in trials):
        log.warning("no proxy trial is feasible (search.max_accuracy_drop / latency_budget_ms): finalizing among all finished trials")
    teacher_layers = load_config(str(folder / "reference" / "models" / "teacher")).num_hidden_layers
    peers = []  # trained first: the students that should beat them are chosen by their latency
    for b in spec.baselines:
        raw = recipe.raw(name=f"baseline-{b.name}", output_dir=str(folder / "baselines"), cache_dir=str(recipe.cache_path()))
        raw["passes"] = baseline_passes(b, raw["passes"], teacher_layers, spec.student)
        peers.append(Entry(b.name, "baseline", None, *_run(raw, spec.finalize.set, retime), spec.student))
    chosen = dict(pick(trials, k))
    against: dict[int, list[str]] = {}
    if spec.finalize.cover_baselines and peers:
        for name, (number, score) in challengers(trials, _predicted(folder, recipe, spec, peers), latency_error(trials)).items():
            chosen[number] = score
            against.setdefault(number, []).append(name)
    entries = [Entry("teacher", "teacher", None, folder / "reference", False, "teacher")]
    for number, score in sorted(chosen.items(), key=lambda t: t[1].predicted_ms):
        raw = yaml.safe_load((Path(score.path) / "recipe.yaml").read_text()) | {"name": f"final-{number:04d}", "output_dir": str(folder / "final")}
        run, fresh = _run(raw, spec.finalize.set, retime)
        entries.append(Entry(f"final-{number:04d}", "final", number, run, fresh, spec.student, tuple(against.get(number, ()))))
    entries += peers
    path = out or folder / "final" / "frontier.json"
    if not retime and not any(e.fresh for e in entries) and path.is_file():
        old = Frontier.model_validate(json.loads(path.read_text()))
        if [(e.name, e.path) for e in old.entries] == [(e.name, str(e.run)) for e in entries]:
            log.info("final students, baselines and their timing are unchanged since %s; --retime times them again", path)
            new = old  # written by a compress without paired comparisons or the latency model's check: those are added
            if any(e.kind == "final" and not e.paired for e in old.entries):
                new = compare(recipe, new, recipe.seed)
            if not new.trials and spec.finalize.check_trials:
                new = new.model_copy(update={"trials": _check(folder, recipe, spec, trials)})
            if new is not old:
                atomic_write_json(path, new.model_dump(mode="json"))
            return path
    frontier: Frontier = compare(recipe, time_frontier(recipe, spec, entries), recipe.seed)
    frontier = frontier.model_copy(update={"trials": _check(folder, recipe, spec, trials)})
    atomic_write_json(path, frontier.model_dump(mode="json"))
    ref, metric = frontier.reference, trials[0][1].metric
    for e in frontier.entries:
        best, lat = e.best(), e.best().latency
        test = f"{best.splits['test'][metric]:.4f}" if "test" in best.splits else "-"
        if lat is not None:
            log.info("%s: %s %.2f ms (p10) = %.2fx %s, test %s %s", e.name, best.form, lat.p10_ms, lat.speedup or 0, ref, metric, test)
    for rival, c in closest(frontier).items():
        (lo, hi), diff = c["ci95"], c["diff"]
        log.info("%s: %s, the most accurate final student as fast, %+.4f %s (paired 95%% CI %+.4f, %+.4f)", rival, c["student"], diff, metric, lo, hi)
    return path


def _check(folder: Path, recipe: Recipe, spec: SearchSpec, trials: list[tuple[int, TrialScore]]) -> list[TrialTiming]:
    """The latency model's check: up to finalize.check_trials proxy trials, spread along the predicted latency,
    re-timed beside the teacher's forms (compress.search.timing.time_trials)."""
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
    rho_own, err_own = agreement([s.predicted_speedup for s in own], [s.measured_speedup or 0.0 for s in own])
    log.info(
        "latency model on %d proxy trials re-timed together: rank correlation %.3f, median |error| %.1f%% (each in its own run: %.3f, %.1f%%)",
        len(timed), rho, 100 * err, rho_own, 100 * err_own,
    )  # fmt: skip
    return timed


def _run(raw: dict[str, Any], overrides: dict[str, Any], retime: bool) -> tuple[Path, bool]:
    """Run (or reuse) a final run: the recipe with the full-budget overrides; a finished run of the same recipe is kept.
    Returns (its folder, whether it was trained now)."""
    for key, value in overrides.items():
        set_path(raw, key, value, f"search.finalize.set.{key}")
    recipe = parse_recipe(raw, f"finalize ({raw['name']})")
    folder = Path(recipe.output_dir) / recipe.name
    same = (folder / "recipe.yaml").is_file() and yaml.safe_load((folder / "recipe.yaml").read_text()) == recipe.model_dump(mode="json")
    if same and read_metrics(folder / "metrics.json").status == "complete":
        log.info("%s: finished before, reused", recipe.name)
        return folder, False
    if retime:
        raise CompressError(f"{folder} is not a finished final run of this study; run compress finalize without --retime first")
    log.info("%s: training at full budget (%s)", recipe.name, ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the recipe as is")
    return run_recipe(recipe, f"finalize ({recipe.name})").folder, True
