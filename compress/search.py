"""`compress search`: a multi-objective Optuna study over a recipe's `search:` space.

    recipe + search space -> reference run (teacher accuracy and latency, once)
                          -> trial n: the recipe with sampled values set -> results/<study>/trials/trial-n/
                          -> objectives (accuracy, latency[, size]) + constraints, stored in the study

A trial is an ordinary recipe run (`run_recipe`), so everything a recipe can do a trial can do, and its
folder can be inspected like any run. The study lives in Optuna storage (SQLite `results/<study>/study.db`
by default; any URL with --storage), so several processes or machines can share it and a killed search
resumes: heartbeats mark a dead worker's trial stale, and it is retried with the same parameters.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from compress.errors import CompressError, Interrupted
from compress.io import atomic_write_json, stable_hash
from compress.latency import flops_per_sequence
from compress.pipeline import run_recipe
from compress.recipe import Recipe, load_recipe, parse_recipe, set_path
from compress.space import GROUP_FIELDS, Param, SearchSpec
from compress.squeeze import Groups, check_groups

log = logging.getLogger(__name__)

DONE = (TrialState.COMPLETE, TrialState.PRUNED)


class TrialFailed(Exception):
    """A trial whose configuration failed (e.g. a pass rejected it): recorded, and the search goes on."""


def study_folder(recipe: Recipe) -> Path:
    return Path(recipe.output_dir) / (recipe.search.study or recipe.name)


def search(recipe_path: Path, overrides: list[str] | None = None, *, storage: str | None = None, workers: int = 1,
           resume: bool = False, force_new: bool = False, worker: int | None = None) -> Path:
    """Run (or join, or resume) the study declared by the recipe's `search:` section; return its folder."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our log lines say what happens, per trial
    source = str(recipe_path)
    recipe = load_recipe(recipe_path, overrides)
    spec = _spec(recipe, source)
    folder = study_folder(recipe)
    name = spec.study or recipe.name
    url = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    if worker is not None:  # a process started by --workers: the parent checked and prepared everything
        check_space(recipe, spec, source)  # (cheap; also resolves groups_up_to the same way)
        study = optuna.load_study(study_name=name, storage=_storage(url, spec), sampler=_sampler(spec, recipe.seed + worker))
        _work(study, recipe, spec, folder, source, json.loads((folder / "search.json").read_text())["teacher"])
        return folder
    check_space(recipe, spec, source)
    folder.mkdir(parents=True, exist_ok=True)
    study = _open_study(url, name, recipe, spec, folder, resume=resume, force_new=force_new)
    teacher = teacher_reference(recipe, folder)
    atomic_write_json(folder / "search.json", {"study": name, "storage": url, "recipe": source, "overrides": overrides or [],
                                                "objectives": spec.objectives, "directions": spec.directions(), "teacher": teacher,
                                                "search": spec.model_dump(mode="json")})
    if workers == 1:
        _work(study, recipe, spec, folder, source, teacher)
    else:
        _spawn(recipe_path, overrides or [], url, workers, recipe.threads)
    return folder


def _spec(recipe: Recipe, source: str) -> SearchSpec:
    if recipe.search is None:
        raise CompressError(f"{source} has no search: section; add one with objectives and a space (see recipes/quickstart.yaml)")
    if not recipe.search.space:
        raise CompressError(f"{source}: search.space is empty; name at least one recipe key to vary, e.g. passes.convert.groups: {{groups: [1, 2, 4]}}")
    return recipe.search


def check_space(recipe: Recipe, spec: SearchSpec, source: str) -> None:
    """Fail before any training: every key must be a real recipe option, every group count must divide."""
    raw = recipe.model_dump(mode="json", exclude={"search"})
    for key, param in spec.space.items():
        set_path(raw, key, param.first(), f"{source}: search.space.{key}")
    parse_recipe(raw, f"{source} (search.space values)")
    groups = {k: p for k, p in spec.space.items() if k.endswith(".groups")}
    if groups:
        from compress.models import load_config
        from compress.squeeze import channels, valid_groups

        config = load_config(recipe.teacher.model, recipe.teacher.revision)
        ffns = {config.intermediate_size} | {int(v) for k, p in spec.space.items() if k.endswith(".intermediate_size") for v in (p.choices or []) if v}
        for key, param in groups.items():
            if param.groups_up_to is not None:  # every count that divides every channel count, up to the limit
                ok = set.intersection(*[set(valid_groups(*io)) for ffn in ffns for io in channels(config.hidden_size, ffn).values()])
                param = spec.space[key] = Param(groups=sorted(g for g in ok if g <= param.groups_up_to))
            candidates = [Groups.parse(str(c)) for c in param.choices or []] + \
                         [Groups(**{f: g for f in GROUP_FIELDS}) for g in param.groups or []]
            for g in candidates:
                for ffn in sorted(ffns):
                    try:
                        check_groups(g, config.hidden_size, ffn)
                    except CompressError as e:
                        raise CompressError(f"{source}: search.space.{key}: {e}") from None


def _fingerprint(recipe: Recipe, spec: SearchSpec) -> str:
    """What makes trials comparable: the recipe they run and the space they sample (not how many, where, how fast)."""
    base = recipe.model_dump(mode="json", exclude={"search", "threads", "device", "name", "output_dir", "cache_dir"})
    return stable_hash({"recipe": base, "space": {k: p.model_dump(exclude_none=True) for k, p in spec.space.items()}, "objectives": spec.objectives})


def _storage(url: str, spec: SearchSpec) -> RDBStorage:
    try:
        return RDBStorage(url, heartbeat_interval=spec.heartbeat_seconds, grace_period=spec.stale_after_seconds,
                          heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=spec.max_retries, inherit_intermediate_values=True),
                          engine_kwargs={"pool_pre_ping": True})
    except Exception as e:  # sqlalchemy/driver errors: bad URL, server down, missing driver
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CompressError(f"cannot open study storage {url!r}: {first}; check the URL and that the database server is reachable") from None


def _sampler(spec: SearchSpec, seed: int) -> optuna.samplers.BaseSampler:
    def constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
        return trial.user_attrs.get("constraints", [1.0])  # unscored trials count as infeasible

    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)
    population = spec.population or max(4, spec.trials // 3)
    return optuna.samplers.NSGAIISampler(population_size=population, seed=seed, constraints_func=constraints)


def _open_study(url: str, name: str, recipe: Recipe, spec: SearchSpec, folder: Path, *, resume: bool, force_new: bool) -> optuna.Study:
    storage = _storage(url, spec)
    fingerprint = _fingerprint(recipe, spec)
    if name in optuna.get_all_study_names(storage):
        old = optuna.load_study(study_name=name, storage=storage)
        finished = len(old.get_trials(deepcopy=False, states=DONE))
        if force_new:
            optuna.delete_study(study_name=name, storage=storage)
            shutil.rmtree(folder / "trials", ignore_errors=True)
            log.info("deleted study %s (%d finished trials) as --force-new asked", name, finished)
        elif old.user_attrs.get("fingerprint") != fingerprint:
            raise CompressError(f"study {name!r} in {url} was made with a different recipe or search space; "
                                f"use another search.study name, or --force-new to delete it ({finished} finished trials) and start over")
        elif not resume:
            raise CompressError(f"study {name!r} already exists with {finished} finished trials; --resume continues it, --force-new starts over")
        else:
            log.info("resuming study %s: %d finished trials of %d", name, finished, spec.trials)
            return optuna.load_study(study_name=name, storage=storage, sampler=_sampler(spec, recipe.seed))
    study = optuna.create_study(study_name=name, storage=storage, directions=spec.directions(), sampler=_sampler(spec, recipe.seed))
    study.set_user_attr("fingerprint", fingerprint)
    study.set_user_attr("objectives", spec.objectives)
    return study


def teacher_reference(recipe: Recipe, folder: Path) -> dict[str, Any]:
    """Teacher accuracy (validation, test) and latency (torch eager, ONNX Runtime fp32), measured once per study.

    Runs the recipe's leading teacher passes (fine-tuning is cached) and reuses a finished reference run.
    """
    lead = []
    for p in recipe.passes:
        if p.name != "finetune_teacher":
            break
        lead.append(p.model_dump(mode="json"))
    evaluate = next((p.options for p in recipe.passes if p.name == "evaluate"), {})
    timing = {k: evaluate[k] for k in ("latency_batch", "latency_seq", "latency_runs") if k in evaluate}
    raw = recipe.model_dump(mode="json", exclude={"search"}) | {"name": "reference", "output_dir": str(folder), "cache_dir": str(recipe.cache_path())}
    raw["passes"] = lead + [{"name": "export", "options": {"models": ["teacher"]}},
                            {"name": "evaluate", "options": {"models": ["teacher", "teacher.onnx"], "latency": True} | timing}]
    key = stable_hash(raw | {"threads": None})
    done = folder / "reference" / "metrics.json"
    if done.is_file():
        old = json.loads(done.read_text())
        if old.get("status") == "complete" and old.get("reference_key") == key:
            return old["teacher"]
    run = run_recipe(parse_recipe(raw, "search reference run"))
    metrics = json.loads((run / "metrics.json").read_text())
    ev = metrics["metrics"]["evaluate"]
    teacher = {split: ev["teacher"][split] for split in ("validation", "test") if split in ev["teacher"]} | {
        "latency_ms": ev["teacher"]["latency"]["median_ms"], "latency_onnx_ms": ev["teacher.onnx"]["latency"]["median_ms"],
        "params": ev["teacher"]["latency"]["params"], "gflops": ev["teacher"]["latency"]["gflops"]}
    atomic_write_json(done, metrics | {"reference_key": key, "teacher": teacher})
    return teacher


def _work(study: optuna.Study, recipe: Recipe, spec: SearchSpec, folder: Path, source: str, teacher: dict) -> None:
    """Run trials until the study holds `spec.trials` finished ones (shared with every other worker)."""
    if len(study.get_trials(deepcopy=False, states=DONE)) >= spec.trials:
        log.info("study %s already has %d finished trials", study.study_name, spec.trials)
        return

    def too_many_failures(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if "error" in t.user_attrs]
        if len(failed) >= max(3, spec.trials):
            study.stop()
            log.error("stopping: %d trials failed; the last said: %s", len(failed), failed[-1].user_attrs["error"])

    objective = Objective(recipe, spec, folder, source, teacher)
    while len(study.get_trials(deepcopy=False, states=DONE)) < spec.trials:
        try:
            study.optimize(objective, callbacks=[MaxTrialsCallback(spec.trials, states=DONE), too_many_failures], catch=(TrialFailed,), gc_after_trial=True)
            return
        except optuna.exceptions.UpdateFinishedTrialError as e:
            # another worker declared this trial stale while it ran (heartbeat starved); it has been retried there
            log.warning("a trial outlived stale_after_seconds=%d and was retried elsewhere (%s); raise it if this repeats",
                        spec.stale_after_seconds, str(e).splitlines()[0])


class Objective:
    """One trial: set the sampled values in the recipe, run it, score its fastest form of the student."""

    def __init__(self, recipe: Recipe, spec: SearchSpec, folder: Path, source: str, teacher: dict) -> None:
        self.recipe, self.spec, self.folder, self.source, self.teacher = recipe, spec, folder, source, teacher

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        values = {key: param.suggest(trial, key) for key, param in self.spec.space.items()}
        trial.set_user_attr("config", values)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        raw = self.recipe.model_dump(mode="json", exclude={"search"}) | {
            "name": f"trial-{trial.number:04d}", "output_dir": str(self.folder / "trials"), "cache_dir": str(self.recipe.cache_path())}
        for key, value in values.items():
            set_path(raw, key, value, f"search.space.{key}")
        log.info("trial %d: %s", trial.number, values)
        try:
            run = run_recipe(parse_recipe(raw, f"{self.source} (trial {trial.number})"), self.source, on_validation=self._pruner(trial))
            result = score(json.loads((run / "metrics.json").read_text()), self.spec, self.teacher, run)
        except Interrupted:
            raise
        except CompressError as e:
            trial.set_user_attr("error", str(e))
            log.warning("trial %d failed: %s", trial.number, e)
            raise TrialFailed(str(e)) from None
        for k, v in result.items():
            trial.set_user_attr(k, v)
        log.info("trial %d: %s val acc %.4f, %.2f ms (%.2fx teacher)%s", trial.number, result["form"], result["val_accuracy"],
                 result["latency_ms"], result["speedup_vs_teacher"], "" if result["feasible"] else ", infeasible")
        return tuple(result[OBJECTIVE_KEYS[o]] for o in self.spec.objectives)

    def _pruner(self, trial: optuna.Trial):
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


OBJECTIVE_KEYS = {"accuracy": "val_accuracy", "latency": "latency_ms", "size": "size_mb"}


def score(metrics: dict, spec: SearchSpec, teacher: dict, run: Path) -> dict[str, Any]:
    """The trial's result: its fastest timed form of the student, with every metric the report shows."""
    ev = metrics["metrics"].get("evaluate", {})
    s = spec.student
    forms = {k: v for k, v in ev.items() if (k == s or k.startswith(s + ".")) and "latency" in v and "validation" in v}
    if not forms:
        raise CompressError(f"the trial's evaluate pass did not time student {s!r} on validation; give evaluate latency: true and "
                            f"splits including validation, and keep search.student equal to convert.student")
    form, r = min(forms.items(), key=lambda kv: kv[1]["latency"]["median_ms"])
    config = json.loads((run / "models" / s / "config.json").read_text())
    conv = metrics["metrics"].get("convert", {}).get(s, {})
    onnx = run / "models" / s / ("model.onnx" if form == f"{s}.onnx" else f"model.{form.split('.', 1)[-1]}.onnx")
    size_mb = onnx.stat().st_size / 2**20 if form != s and onnx.is_file() else r["latency"]["params"] * (1 if "int8" in form else 4) / 2**20
    lat = r["latency"]
    out = {
        "form": form, "path": str(run), "val_accuracy": r["validation"]["accuracy"], "val_ci95": r["validation"]["accuracy_ci95"],
        "test_accuracy": r.get("test", {}).get("accuracy"), "test_ci95": r.get("test", {}).get("accuracy_ci95"),
        "test_macro_f1": r.get("test", {}).get("macro_f1"), "latency_ms": lat["median_ms"], "latency_p90_ms": lat["p90_ms"],
        "latency_cv": lat["cv"], "speedup_vs_teacher": lat["speedup_vs_teacher"] or teacher["latency_ms"] / lat["median_ms"],
        "params": lat["params"], "gflops": lat["gflops"], "size_mb": size_mb, "layers": config["num_hidden_layers"],
        "intermediate_size": config["intermediate_size"],
        "groups": ",".join(str((conv.get("groups") or {}).get(f, config.get(f"{f}_groups", 1))) for f in GROUP_FIELDS),
    }
    constraints = []
    if spec.max_accuracy_drop is not None:
        constraints.append(teacher["validation"]["accuracy"] - spec.max_accuracy_drop - out["val_accuracy"])
    if spec.latency_budget_ms is not None:
        constraints.append(out["latency_ms"] - spec.latency_budget_ms)
    out["constraints"] = constraints or [0.0]
    out["feasible"] = all(c <= 0 for c in out["constraints"])
    return out


def _spawn(recipe_path: Path, overrides: list[str], url: str, workers: int, threads: int | None) -> None:
    """N worker processes on one study. Threads are split between them, so latency is measured under
    contention: for latency you trust, run one worker per machine (they join the same study by name)."""
    per = max(1, (threads or os.cpu_count() or 1) // workers)
    cmd = [sys.executable, "-m", "compress.cli", "search", str(recipe_path), "--storage", url, *[a for o in overrides for a in ("--set", o)],
           "--set", f"threads={per}"]
    log.info("starting %d workers (%d threads each) on %s", workers, per, url)
    procs = [subprocess.Popen([*cmd, "--worker", str(i)]) for i in range(workers)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise Interrupted("search interrupted; finished trials are kept in the study - run again with --resume to continue") from None
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    if bad:
        raise CompressError(f"search worker(s) {', '.join(f'{i} (exit {c})' for i, c in bad)} failed; see their messages above, then --resume")
