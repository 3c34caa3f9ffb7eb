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

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from compress.core.errors import CompressError, first_line
from compress.deploy.targets import get_target
from compress.recipe import Recipe, load_recipe
from compress.recipe.search import SearchSpec
from compress.study.info import StudyInfo, read_info
from compress.study.latency import latency_model, parents_model
from compress.study.objective import Objective, TrialFailed
from compress.study.reference import teacher_reference
from compress.study.space import check_space, fingerprint, seed_params
from compress.study.storage import STORAGE_ENV, fail_stale, masked, open_storage
from compress.study.target import target_form
from compress.study.workers import gpu_per_worker, spawn, visible_gpus

log = logging.getLogger(__name__)

DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def study_folder(recipe: Recipe) -> Path:
    return Path(recipe.output_dir) / (recipe.search.study if recipe.search and recipe.search.study else recipe.name)


def check_study(recipe: Recipe, source: str) -> SearchSpec:
    """Everything a search checks before any work: the space, the seeds, baselines, the target's form. `compress
    validate` runs the same checks, so a recipe it accepts is never refused by `compress search`."""
    spec = _spec(recipe, source)
    check_space(recipe, spec, source)
    seed_params(spec, source)
    target_form(recipe, spec, source)
    return spec


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
    """Run (or join, or resume) the study declared by the recipe's `search:` section; return its folder.
    Finalizing (search.finalize.top_k) is the caller's next step: `compress.finalize`."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our log lines say what happens, per trial
    source = str(recipe_path)
    recipe = load_recipe(recipe_path, overrides)
    spec = check_study(recipe, source)
    folder = study_folder(recipe)
    name = spec.study or recipe.name
    url = storage or os.environ.get(STORAGE_ENV) or f"sqlite:///{(folder / 'study.db').resolve()}"
    if worker is not None:  # a process started by --workers: the parent checked and prepared everything
        store = open_storage(url, spec)
        study = optuna.load_study(study_name=name, storage=store, sampler=_sampler(spec, recipe.seed + worker))
        teacher = read_info(folder).teacher
        _work(study, Objective(recipe, spec, folder, source, teacher, parents_model(folder, spec), store))
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    store = open_storage(url, spec)
    study = _open_study(store, url, name, recipe, spec, folder, resume=resume, force_new=force_new)
    fail_stale(study, store, spec)  # a killed search's trials: retried once, here, before workers race to do it
    # seeds are tried before anything is sampled; a seed already in the study is not queued again
    for params in seed_params(spec, source):
        study.enqueue_trial(params, skip_if_exists=True)
    teacher = teacher_reference(recipe, folder)
    predictor = latency_model(folder, recipe, spec)
    StudyInfo(
        study=name,
        storage=masked(url),  # never a password: give it again with --storage or COMPRESS_STORAGE
        recipe=source,
        overrides=overrides or [],
        objectives=spec.objectives,
        directions=spec.directions(),
        target=get_target(spec.target).name,
        teacher=teacher,
        search=spec,
    ).write(folder)
    if workers == 1:
        _work(study, Objective(recipe, spec, folder, source, teacher, predictor, store))
    else:
        gpus = gpu_per_worker(recipe.device, workers, visible_gpus())
        spawn(recipe_path, overrides or [], url, workers, recipe.threads, gpus)
    return folder


def _spec(recipe: Recipe, source: str) -> SearchSpec:
    if recipe.search is None:
        raise CompressError(
            f"{source} has no search: section; add one with objectives and a space (see recipes/quickstart.yaml)"
        )
    if not recipe.search.space:
        raise CompressError(
            f"{source}: search.space is empty; name at least one recipe key to vary, e.g. passes.convert.groups: "
            f"{{groups: [1, 2, 4]}}"
        )
    return recipe.search


def _sampler(spec: SearchSpec, seed: int) -> optuna.samplers.BaseSampler:
    """Constraints reach the samplers through Trial.set_constraint (the objective sets them on every scored trial)."""
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    population = spec.population or max(4, spec.trials // 3)
    return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)


def _open_study(
    storage: BaseStorage,
    url: str,
    name: str,
    recipe: Recipe,
    spec: SearchSpec,
    folder: Path,
    *,
    resume: bool,
    force_new: bool,
) -> optuna.Study:
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
                f"study {name!r} in {masked(url)} was made with a different recipe or search space; "
                f"use another search.study name, or --force-new to delete it ({finished} finished trials) and start "
                "over"
            )
        elif not resume:
            raise CompressError(
                f"study {name!r} already exists with {finished} finished trials; --resume continues it, --force-new "
                "starts over"
            )
        else:
            log.info("resuming study %s: %d finished trials of %d", name, finished, spec.trials)
            return optuna.load_study(study_name=name, storage=storage, sampler=_sampler(spec, recipe.seed))
    study = optuna.create_study(
        study_name=name, storage=storage, directions=spec.directions(), sampler=_sampler(spec, recipe.seed)
    )
    study.set_user_attr("fingerprint", key)
    study.set_user_attr("objectives", spec.objectives)
    return study


def _work(study: optuna.Study, objective: Objective) -> None:
    """Run trials until the study holds `spec.trials` finished ones (shared with every other worker), or until
    `spec.timeout` seconds have passed: Optuna's optimize timeout, so no trial starts after it (one running then
    finishes)."""
    spec, storage = objective.spec, objective.storage
    if len(study.get_trials(deepcopy=False, states=DONE)) >= spec.trials:
        log.info("study %s already has %d finished trials", study.study_name, spec.trials)
        return

    def too_many_failures(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if "error" in t.user_attrs]
        if len(failed) >= max(3, spec.trials):
            study.stop()
            log.error("stopping: %d trials failed; the last said: %s", len(failed), failed[-1].user_attrs["error"])

    def stale(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        fail_stale(study, storage, spec)

    deadline = time.monotonic() + spec.timeout if spec.timeout else None
    while len(study.get_trials(deepcopy=False, states=DONE)) < spec.trials:
        left = deadline - time.monotonic() if deadline is not None else None
        if left is not None and left <= 0:
            finished = len(study.get_trials(deepcopy=False, states=DONE))
            log.warning(
                "the search budget (search.timeout %.0f s) is spent: %d of %d trials finished; "
                "finalizing what it found (--resume continues the study)",
                *(spec.timeout, finished, spec.trials),
            )
            return
        fail_stale(study, storage, spec)
        try:
            callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = [
                MaxTrialsCallback(spec.trials, states=DONE),
                too_many_failures,
                stale,
            ]
            study.optimize(objective, callbacks=callbacks, catch=(TrialFailed,), gc_after_trial=True, timeout=left)
            if deadline is None or time.monotonic() < deadline:
                return
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as e:
            # another worker declared this trial stale while it ran (heartbeat starved) and retried it there. Optuna's
            # optimize then fails telling the finished trial ("Cannot tell a FAIL trial."): this worker goes on
            if not _finished_elsewhere(e):
                raise
            log.warning(
                "a trial outlived stale_after_seconds=%d and was retried elsewhere (%s); raise it if this repeats",
                spec.stale_after_seconds,
                first_line(e),
            )


def _finished_elsewhere(e: Exception) -> bool:
    """Whether optimize stopped because the running trial was finished by another worker (the error Optuna raises)."""
    return isinstance(e, optuna.exceptions.UpdateFinishedTrialError) or str(e).startswith("Cannot tell a ")
