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
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from compress.core.atomic import atomic_write_json
from compress.core.errors import CompressError, Interrupted
from compress.core.hashing import stable_hash
from compress.core.records import TeacherReference
from compress.deploy.latency_model import LatencyModel
from compress.pipeline.runner import run_recipe
from compress.recipe import Recipe, load_recipe, parse_recipe
from compress.recipe.search import SearchSpec
from compress.search.objective import Objective, TrialFailed
from compress.search.predictor import latency_model, target_form
from compress.search.space import check_space, fingerprint
from compress.search.timing import timing_options

log = logging.getLogger(__name__)

DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def study_folder(recipe: Recipe) -> Path:
    return Path(recipe.output_dir) / (recipe.search.study if recipe.search and recipe.search.study else recipe.name)


def search(
    recipe_path: Path,
    overrides: list[str] | None = None,
    *,
    storage: str | None = None,
    workers: int = 1,
    resume: bool = False,
    force_new: bool = False,
    worker: int | None = None,
) -> Path:
    """Run (or join, or resume) the study declared by the recipe's `search:` section; return its folder."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our log lines say what happens, per trial
    source = str(recipe_path)
    recipe = load_recipe(recipe_path, overrides)
    spec = _spec(recipe, source)
    folder = study_folder(recipe)
    name = spec.study or recipe.name
    url = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    check_space(recipe, spec, source)
    target_form(recipe, spec, source)
    if worker is not None:  # a process started by --workers: the parent checked and prepared everything
        study = optuna.load_study(study_name=name, storage=_storage(url, spec), sampler=_sampler(spec, recipe.seed + worker))
        teacher = TeacherReference.model_validate(json.loads((folder / "search.json").read_text())["teacher"])
        _work(study, recipe, spec, folder, source, teacher, latency_model(folder, recipe, spec, calibrate_if_needed=False))
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    study = _open_study(url, name, recipe, spec, folder, resume=resume, force_new=force_new)
    teacher = teacher_reference(recipe, folder)
    predictor = latency_model(folder, recipe, spec)
    info = {
        "study": name,
        "storage": url,
        "recipe": source,
        "overrides": overrides or [],
        "objectives": spec.objectives,
        "directions": spec.directions(),
        "target": spec.target,
        "teacher": teacher.model_dump(mode="json"),
        "search": spec.model_dump(mode="json"),
    }
    atomic_write_json(folder / "search.json", info)
    if workers == 1:
        _work(study, recipe, spec, folder, source, teacher, predictor)
    else:
        _spawn(recipe_path, overrides or [], url, workers, recipe.threads)
    if spec.finalize.top_k:
        from compress.search.finalize import finalize

        finalize(folder)
    return folder


def _spec(recipe: Recipe, source: str) -> SearchSpec:
    if recipe.search is None:
        raise CompressError(f"{source} has no search: section; add one with objectives and a space (see recipes/quickstart.yaml)")
    if not recipe.search.space:
        raise CompressError(
            f"{source}: search.space is empty; name at least one recipe key to vary, e.g. passes.convert.groups: {{groups: [1, 2, 4]}}"
        )
    return recipe.search


def _storage(url: str, spec: SearchSpec) -> RDBStorage:
    try:
        return RDBStorage(
            url,
            heartbeat_interval=spec.heartbeat_seconds,
            grace_period=spec.stale_after_seconds,
            heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=spec.max_retries, inherit_intermediate_values=True),
            engine_kwargs={"pool_pre_ping": True},
        )
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
    key = fingerprint(recipe, spec)
    if name in optuna.get_all_study_names(storage):
        old = optuna.load_study(study_name=name, storage=storage)
        finished = len(old.get_trials(deepcopy=False, states=DONE))
        if force_new:
            optuna.delete_study(study_name=name, storage=storage)
            shutil.rmtree(folder / "trials", ignore_errors=True)
            log.info("deleted study %s (%d finished trials) as --force-new asked", name, finished)
        elif old.user_attrs.get("fingerprint") != key:
            raise CompressError(
                f"study {name!r} in {url} was made with a different recipe or search space; "
                f"use another search.study name, or --force-new to delete it ({finished} finished trials) and start over"
            )
        elif not resume:
            raise CompressError(f"study {name!r} already exists with {finished} finished trials; --resume continues it, --force-new starts over")
        else:
            log.info("resuming study %s: %d finished trials of %d", name, finished, spec.trials)
            return optuna.load_study(study_name=name, storage=storage, sampler=_sampler(spec, recipe.seed))
    study = optuna.create_study(study_name=name, storage=storage, directions=spec.directions(), sampler=_sampler(spec, recipe.seed))
    study.set_user_attr("fingerprint", key)
    study.set_user_attr("objectives", spec.objectives)
    return study


def teacher_reference(recipe: Recipe, folder: Path) -> TeacherReference:
    """The teacher in every deploy form (PyTorch fp32, ONNX Runtime fp32 and int8): accuracy on validation and
    test, latency at the trials' shape and at the task's natural lengths, measured once per study.

    Runs the recipe's leading teacher passes (fine-tuning is cached) and reuses a finished reference run.
    """
    lead = []
    for p in recipe.passes:
        if p.name != "finetune_teacher":
            break
        lead.append(p.model_dump(mode="json"))
    evaluate = next((p.options for p in recipe.passes if p.name == "evaluate"), {})
    timing = {k: evaluate[k] for k in ("latency_batch", "latency_seq", "latency_runs") if k in evaluate}
    natural = recipe.search.finalize.natural_texts if recipe.search else 0
    raw = recipe.raw(name="reference", output_dir=str(folder), cache_dir=str(recipe.cache_path()))
    raw["passes"] = [
        *lead,
        {"name": "export", "options": {"models": ["teacher"]}},
        {"name": "quantize", "options": {"models": ["teacher"], "backend": "onnxruntime", "mode": "dynamic"}},
        {"name": "evaluate", "options": {"models": ["teacher*"], "latency": True, "latency_natural": natural} | timing},
    ]
    key = stable_hash(raw | {"threads": None})
    done = folder / "reference" / "reference.json"
    if done.is_file():
        old = json.loads(done.read_text())
        if old.get("key") == key:
            return TeacherReference.model_validate(old["teacher"])
    teacher = TeacherReference(forms=run_recipe(parse_recipe(raw, "search reference run")).metrics.forms_of("teacher"))
    atomic_write_json(done, {"key": key, "teacher": teacher.model_dump(mode="json")})
    fastest = teacher.fastest()
    log.info(
        "the teacher's fastest deploy form: %s, %.2f ms (p10, seq %d): every speed-up is against it",
        fastest.form,
        fastest.latency.p10_ms if fastest.latency else float("nan"),
        timing_options(recipe)["seq"],
    )
    return teacher


def _work(
    study: optuna.Study, recipe: Recipe, spec: SearchSpec, folder: Path, source: str, teacher: TeacherReference, predictor: LatencyModel
) -> None:
    """Run trials until the study holds `spec.trials` finished ones (shared with every other worker)."""
    if len(study.get_trials(deepcopy=False, states=DONE)) >= spec.trials:
        log.info("study %s already has %d finished trials", study.study_name, spec.trials)
        return

    def too_many_failures(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if "error" in t.user_attrs]
        if len(failed) >= max(3, spec.trials):
            study.stop()
            log.error("stopping: %d trials failed; the last said: %s", len(failed), failed[-1].user_attrs["error"])

    objective = Objective(recipe, spec, folder, source, teacher, predictor)
    while len(study.get_trials(deepcopy=False, states=DONE)) < spec.trials:
        try:
            study.optimize(
                objective, callbacks=[MaxTrialsCallback(spec.trials, states=DONE), too_many_failures], catch=(TrialFailed,), gc_after_trial=True
            )
            return
        except optuna.exceptions.UpdateFinishedTrialError as e:
            # another worker declared this trial stale while it ran (heartbeat starved); it has been retried there
            log.warning(
                "a trial outlived stale_after_seconds=%d and was retried elsewhere (%s); raise it if this repeats",
                spec.stale_after_seconds,
                str(e).splitlines()[0],
            )


def _spawn(recipe_path: Path, overrides: list[str], url: str, workers: int, threads: int | None) -> None:
    """N worker processes on one study. Threads are split between them, so latency is measured under
    contention: for latency you trust, run one worker per machine (they join the same study by name)."""
    per = max(1, (threads or os.cpu_count() or 1) // workers)
    cmd = [
        sys.executable,
        "-m",
        "compress",
        "search",
        str(recipe_path),
        "--storage",
        url,
        *[a for o in overrides for a in ("--set", o)],
        "--set",
        f"threads={per}",
    ]
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
