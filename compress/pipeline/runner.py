"""Run a recipe: build the state, run each pass in order, save the results.

    recipe -> load task data, tokenizer, teacher -> RunState -> pass 1 ... pass n -> results/<name>/

The run writes into `results/<name>.partial/` and only a completed run is renamed to `results/<name>/`,
so a killed run can never be mistaken for a finished one. `metrics.json` (a `RunMetrics` record) is
rewritten atomically after every pass, with `status: running|complete|failed`, so a partial run still
shows how far it got.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
import yaml

from compress import __version__
from compress.core.atomic import atomic_write_json, atomic_write_text, replace_dir
from compress.core.errors import Interrupted
from compress.core.records import PassRun, RunMetrics, Status
from compress.data.sources import load_task
from compress.modeling.loading import load_teacher, load_tokenizer, select_device
from compress.modeling.runners import count_parameters
from compress.pipeline.modelcard import model_card
from compress.pipeline.registry import resolve_passes
from compress.pipeline.state import OnValidation, RunState
from compress.recipe import Recipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """A finished run: its folder and what it measured (the same record as its metrics.json)."""

    folder: Path
    metrics: RunMetrics


def run_recipe(recipe: Recipe, source: str = "recipe", on_validation: OnValidation | None = None) -> RunResult:
    """Run every pass of `recipe`; return the finished run.

    `on_validation(model, epoch, val_accuracy, module)` is called during training (the search's pruner).
    """
    passes = resolve_passes(recipe, source)  # fail on bad options before loading anything
    final = Path(recipe.output_dir) / recipe.name
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    handler = logging.FileHandler(partial / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    done: list[PassRun] = []
    state = None
    try:
        atomic_write_text(partial / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        transformers.set_seed(recipe.seed)
        state = _initial_state(recipe, partial)
        state.on_validation = on_validation
        for cls, config in passes:
            log.info("pass %s %s", cls.name, config.model_dump(mode="json"))
            t0 = time.perf_counter()
            state = cls().run(state, config)
            done.append(PassRun(name=cls.name, seconds=round(time.perf_counter() - t0, 2)))
            _write_metrics(partial, recipe, "running", done, state)
        _save_models(state)
        metrics = _write_metrics(partial, recipe, "complete", done, state)
    except BaseException as e:
        _write_metrics(partial, recipe, "failed", done, state, error=f"{type(e).__name__}: {e}")  # keeps what finished
        if isinstance(e, KeyboardInterrupt):
            raise Interrupted(
                f"run interrupted; what finished is in {partial}/metrics.json (status: failed) and {final} is "
                "untouched - "
                "run the recipe again to start over (fine-tuned teachers and teacher outputs stay cached)"
            ) from None
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    replace_dir(partial, final)
    log.info("run complete: %s", final)
    return RunResult(final, metrics)


def _initial_state(recipe: Recipe, out_dir: Path) -> RunState:
    device = select_device(recipe.device, recipe.threads)
    if device.type == "cuda":  # which GPU trains (a search worker gets its own through CUDA_VISIBLE_DEVICES)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all")
        log.info("training on %s (%s; CUDA_VISIBLE_DEVICES=%s)", device, torch.cuda.get_device_name(device), visible)
    task = load_task(recipe.task, recipe.seed)
    log.info("task %s: %s", recipe.task.dataset, task.summary())
    teacher = load_teacher(recipe.teacher, task.labels, task.kind.name)
    tokenizer = load_tokenizer(recipe.teacher.model, recipe.teacher.revision)
    log.info(
        "teacher %s: %.1fM parameters, %d layers",
        recipe.teacher.model,
        count_parameters(teacher) / 1e6,
        teacher.config.num_hidden_layers,
    )
    return RunState(
        recipe=recipe,
        out_dir=out_dir,
        cache_dir=recipe.cache_path(),
        device=device,
        task=task,
        tokenizer=tokenizer,
        teacher=teacher,
    )


def _save_models(state: RunState) -> None:
    """Every model of the run as a plain `save_pretrained` folder (safetensors + config + tokenizer),
    beside its ONNX files, with a short model card."""
    for name, model in state.models().items():
        folder = state.model_dir(name)
        model.save_pretrained(folder)
        state.tokenizer.save_pretrained(folder)
        atomic_write_text(folder / "README.md", model_card(state, name))
        state.artifacts[name] = str(Path(state.recipe.output_dir) / state.recipe.name / "models" / name)


def _write_metrics(
    folder: Path, recipe: Recipe, status: Status, done: list[PassRun], state: RunState | None, error: str | None = None
) -> RunMetrics:
    metrics = RunMetrics(name=recipe.name, status=status, compress_version=__version__, error=error, passes=list(done))
    if state is not None:
        metrics = metrics.model_copy(
            update={
                "labels": state.task.labels,
                "task_kind": state.task.kind.name,
                "metric": state.task.metric,
                "evaluations": dict(state.evaluations),
                "conversions": dict(state.conversions),
                "reports": state.reports,
                "models": dict(state.artifacts),
            }
        )
    # pass reports may hold numpy scalars: json_default
    atomic_write_json(folder / "metrics.json", metrics.model_dump())
    return metrics
