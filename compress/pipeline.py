"""Run a recipe: build the state, run each pass in order, save the results.

    recipe -> load task data, tokenizer, teacher -> RunState -> pass 1 ... pass n -> results/<name>/

The run writes into `results/<name>.partial/` and only a completed run is renamed to `results/<name>/`,
so a killed run can never be mistaken for a finished one. `metrics.json` is rewritten (atomically)
after every pass, with `status: running|complete|failed`, so a partial run still shows how far it got.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import transformers
import yaml

from compress import __version__
from compress.data import load_task
from compress.io import atomic_write_json, atomic_write_text
from compress.models import count_parameters, load_teacher, load_tokenizer, resolve_model, select_device
from compress.recipe import Recipe
from compress.state import RunState

log = logging.getLogger(__name__)


def run_recipe(recipe: Recipe, source: str = "recipe") -> Path:
    """Run every pass of `recipe`; return the finished run's folder."""
    passes = recipe.resolved_passes(source)  # fail on bad options before loading anything
    final = Path(recipe.output_dir) / recipe.name
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    handler = logging.FileHandler(partial / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    summary = {"name": recipe.name, "status": "running", "compress_version": __version__, "passes": []}
    try:
        atomic_write_text(partial / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        transformers.set_seed(recipe.seed)
        state = _initial_state(recipe, partial)
        for cls, config in passes:
            log.info("pass %s %s", cls.name, config.model_dump(mode="json"))
            t0 = time.perf_counter()
            state = cls().run(state, config)
            summary["passes"].append({"name": cls.name, "seconds": round(time.perf_counter() - t0, 2)})
            _write_metrics(partial, summary, state)
        _save_models(state)
        summary["status"] = "complete"
        _write_metrics(partial, summary, state)
    except BaseException as e:
        summary["status"] = "failed"
        summary["error"] = f"{type(e).__name__}: {e}"
        atomic_write_json(partial / "metrics.json", summary)
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(partial, final)
    log.info("run complete: %s", final)
    return final


def _initial_state(recipe: Recipe, out_dir: Path) -> RunState:
    device = select_device(recipe.device, recipe.threads)
    task = load_task(recipe.task, recipe.seed)
    log.info("task %s: %s", recipe.task.dataset, task.summary())
    teacher = load_teacher(recipe.teacher, task.labels)
    tokenizer = load_tokenizer(recipe.teacher.model, recipe.teacher.revision)
    log.info("teacher %s: %.1fM parameters, %d layers", recipe.teacher.model, count_parameters(teacher) / 1e6, teacher.config.num_hidden_layers)
    return RunState(
        recipe=recipe,
        out_dir=out_dir,
        cache_dir=recipe.cache_path(),
        device=device,
        task=task,
        tokenizer=tokenizer,
        teacher=teacher,
        teacher_source=resolve_model(recipe.teacher.model),
    )


def _save_models(state: RunState) -> None:
    """Every model of the run as a plain `save_pretrained` folder (safetensors + config + tokenizer)."""
    for name, model in state.models().items():
        folder = state.out_dir / "models" / name
        model.save_pretrained(folder)
        state.tokenizer.save_pretrained(folder)
        state.artifacts[name] = str(Path(state.recipe.output_dir) / state.recipe.name / "models" / name)


def _write_metrics(folder: Path, summary: dict, state: RunState) -> None:
    atomic_write_json(folder / "metrics.json", summary | {"labels": state.task.labels, "metrics": state.metrics, "models": state.artifacts})
