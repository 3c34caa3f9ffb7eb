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
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from compress.core.atomic import atomic_write_json
from compress.core.errors import CompressError, Interrupted, first_line
from compress.core.hashing import stable_hash
from compress.core.records import TeacherReference
from compress.deploy.latency_model import LatencyModel
from compress.deploy.targets import baseline_runtimes, get_target
from compress.pipeline.runner import run_recipe
from compress.recipe import Recipe, load_recipe, parse_recipe
from compress.recipe.search import SearchSpec
from compress.search.objective import Objective, TrialFailed
from compress.search.predictor import latency_model, parents_model, target_form
from compress.search.space import check_space, fingerprint, seed_params
from compress.search.storage import STORAGE_ENV, fail_stale, masked, open_storage
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
    url = storage or os.environ.get(STORAGE_ENV) or f"sqlite:///{(folder / 'study.db').resolve()}"
    check_space(recipe, spec, source)
    seeds = seed_params(spec, source)
    target_form(recipe, spec, source)
    if worker is not None:  # a process started by --workers: the parent checked and prepared everything
        store = open_storage(url, spec)
        study = optuna.load_study(study_name=name, storage=store, sampler=_sampler(spec, recipe.seed + worker))
        teacher = TeacherReference.model_validate(json.loads((folder / "search.json").read_text())["teacher"])
        _work(study, store, recipe, spec, folder, source, teacher, parents_model(folder, spec))
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    store = open_storage(url, spec)
    study = _open_study(store, url, name, recipe, spec, folder, resume=resume, force_new=force_new)
    fail_stale(study, store, spec)  # a killed search's trials: retried once, here, before workers race to do it
    for params in seeds:  # tried before anything is sampled; a seed already in the study is not queued again
        study.enqueue_trial(params, skip_if_exists=True)
    teacher = teacher_reference(recipe, folder)
    predictor = latency_model(folder, recipe, spec)
    info = {
        "study": name,
        "storage": masked(url),  # never a password: give it again with --storage or COMPRESS_STORAGE
        "recipe": source,
        "overrides": overrides or [],
        "objectives": spec.objectives,
        "directions": spec.directions(),
        "target": get_target(spec.target).name,  # an alias (openvino) recorded as the target it means
        # training may use GPUs (one per worker); latency is the target's on the CPU (a search refuses GPU timing)
        "latency_device": "cpu",
        "teacher": teacher.model_dump(mode="json"),
        "search": spec.model_dump(mode="json"),
    }
    atomic_write_json(folder / "search.json", info)
    if workers == 1:
        _work(study, store, recipe, spec, folder, source, teacher, predictor)
    else:
        _spawn(recipe_path, overrides or [], url, workers, recipe.threads, gpu_per_worker(recipe.device, workers, visible_gpus()))
    if spec.finalize.top_k:
        from compress.search.finalize import finalize

        finalize(folder, storage=url)
    return folder


def _spec(recipe: Recipe, source: str) -> SearchSpec:
    if recipe.search is None:
        raise CompressError(f"{source} has no search: section; add one with objectives and a space (see recipes/quickstart.yaml)")
    if not recipe.search.space:
        raise CompressError(
            f"{source}: search.space is empty; name at least one recipe key to vary, e.g. passes.convert.groups: {{groups: [1, 2, 4]}}"
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
    storage: BaseStorage, url: str, name: str, recipe: Recipe, spec: SearchSpec, folder: Path, *, resume: bool, force_new: bool
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
        {"name": "export", "options": {"models": ["teacher"]} | _teacher_targets(recipe)},
        {"name": "quantize", "options": {"models": ["teacher"], "backend": "onnxruntime", "mode": "dynamic"}},
        {"name": "evaluate", "options": {"models": ["teacher*"], "latency": True, "latency_natural": natural} | timing},
    ]
    key = stable_hash(raw | {"threads": None})
    done = folder / "reference" / "reference.json"
    if done.is_file():
        old = json.loads(done.read_text())
        if old.get("key") == key:
            return TeacherReference.model_validate(old["teacher"])
    metrics = run_recipe(parse_recipe(raw, "search reference run")).metrics
    teacher = TeacherReference(forms=metrics.forms_of("teacher"), metric=metrics.metric)
    atomic_write_json(done, {"key": key, "teacher": teacher.model_dump(mode="json")})
    fastest = teacher.fastest()
    log.info(
        "the teacher's fastest deploy form: %s, %.2f ms (p10, seq %d): every speed-up is against it",
        fastest.form,
        fastest.latency.p10_ms if fastest.latency else float("nan"),
        timing_options(recipe)["seq"],
    )
    return teacher


def _teacher_targets(recipe: Recipe) -> dict:
    """The teacher also in OpenVINO when installed and in the study's target runtime (both precisions): scored and
    timed in the reference run, so the latency model anchors on it and speed-ups are against its fastest form."""
    target = get_target(recipe.search.target) if recipe.search else None
    runtimes = [r for r in dict.fromkeys([*baseline_runtimes(), *([target.runtime] if target else [])]) if r not in ("torch", "onnxruntime")]
    return {"targets": ["onnx", *runtimes], "int8": True} if runtimes else {}


def _work(
    study: optuna.Study,
    storage: BaseStorage,
    recipe: Recipe,
    spec: SearchSpec,
    folder: Path,
    source: str,
    teacher: TeacherReference,
    predictor: LatencyModel,
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

    def stale(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        fail_stale(study, storage, spec)

    objective = Objective(recipe, spec, folder, source, teacher, predictor, storage)
    while len(study.get_trials(deepcopy=False, states=DONE)) < spec.trials:
        fail_stale(study, storage, spec)
        try:
            callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = [
                MaxTrialsCallback(spec.trials, states=DONE),
                too_many_failures,
                stale,
            ]
            study.optimize(objective, callbacks=callbacks, catch=(TrialFailed,), gc_after_trial=True)
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


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (or all that CUDA counts)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]  # NVML count: no CUDA context in this parent


def gpu_per_worker(device: str, workers: int, gpus: list[str]) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each worker: with device cuda or auto and several GPUs, worker i trains on
    GPU i mod len(gpus) alone (GPUs are shared only when workers outnumber them); None keeps the environment."""
    if device == "cpu" or len(gpus) < 2:
        return [None] * workers
    return [gpus[i % len(gpus)] for i in range(workers)]


def _spawn(recipe_path: Path, overrides: list[str], url: str, workers: int, threads: int | None, gpus: list[str | None]) -> None:
    """N worker processes on one study. Threads are split between them, so latency is measured under
    contention: for latency you trust, run one worker per machine (they join the same study by name)."""
    per = max(1, (threads or os.cpu_count() or 1) // workers)
    cmd = [sys.executable, "-m", "compress", "search", str(recipe_path), *[a for o in overrides for a in ("--set", o)], "--set", f"threads={per}"]
    log.info("starting %d workers (%d threads each) on %s", workers, per, masked(url))
    env = os.environ | {STORAGE_ENV: url}  # the URL (and any password) through the environment, not the command line
    if any(gpus):
        log.info("worker GPUs (CUDA_VISIBLE_DEVICES): %s", ", ".join(f"{i}: {g}" for i, g in enumerate(gpus)))
    own = [env | ({"CUDA_VISIBLE_DEVICES": g} if g is not None else {}) for g in gpus]
    procs = [subprocess.Popen([*cmd, "--worker", str(i)], env=own[i]) for i in range(workers)]
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
