"""Run a recipe: build the state, run each pass in order, save the results.

    recipe -> load task data, tokenizer, teacher -> RunState -> pass 1 ... pass n -> results/<name>/

The run writes into `results/<name>.partial/` and only a completed run is renamed to `results/<name>/`,
so a killed run can never be mistaken for a finished one. `metrics.json` is rewritten (atomically)
after every pass, with `status: running|complete|failed`, so a partial run still shows how far it got.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import transformers
import yaml

from compress import __version__
from compress.data import load_task
from compress.errors import Interrupted
from compress.io import atomic_write_json, atomic_write_text, replace_dir
from compress.models import count_parameters, load_teacher, load_tokenizer, resolve_model, select_device
from compress.recipe import Recipe
from compress.state import RunState

log = logging.getLogger(__name__)


def run_recipe(recipe: Recipe, source: str = "recipe", on_validation=None) -> Path:
    """Run every pass of `recipe`; return the finished run's folder.

    `on_validation(model, epoch, val_accuracy, module)` is called during training (the search's pruner).
    """
    passes = recipe.resolved_passes(source)  # fail on bad options before loading anything
    final = Path(recipe.output_dir) / recipe.name
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    handler = logging.FileHandler(partial / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    summary = {"name": recipe.name, "status": "running", "compress_version": __version__, "passes": []}
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
            summary["passes"].append({"name": cls.name, "seconds": round(time.perf_counter() - t0, 2)})
            _write_metrics(partial, summary, state)
        _save_models(state)
        summary["status"] = "complete"
        _write_metrics(partial, summary, state)
    except BaseException as e:
        summary["status"] = "failed"
        summary["error"] = f"{type(e).__name__}: {e}"
        if state is not None:  # keep what the finished passes measured
            _write_metrics(partial, summary, state)
        else:
            atomic_write_json(partial / "metrics.json", summary)
        if isinstance(e, KeyboardInterrupt):
            raise Interrupted(
                f"run interrupted; what finished is in {partial}/metrics.json (status: failed) and {final} is untouched - "
                "run the recipe again to start over (fine-tuned teachers and teacher outputs stay cached)"
            ) from None
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    replace_dir(partial, final)
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
    """Every model of the run as a plain `save_pretrained` folder (safetensors + config + tokenizer),
    beside its ONNX files, with a short model card."""
    for name, model in state.models().items():
        folder = state.model_dir(name)
        model.save_pretrained(folder)
        state.tokenizer.save_pretrained(folder)
        atomic_write_text(folder / "README.md", model_card(state, name))
        state.artifacts[name] = str(Path(state.recipe.output_dir) / state.recipe.name / "models" / name)


def model_card(state: RunState, name: str) -> str:
    """What the model is, where it came from, how good and fast it measured, and how to load it."""
    model = state.models()[name]
    ev = state.metrics.get("evaluate", {})
    lines = [f"# {name}", "", f"{model.config.model_type} sequence classifier from compress run `{state.recipe.name}` "
             f"(teacher `{state.recipe.teacher.model}`, task `{state.recipe.task.dataset}`, labels {state.task.labels}).", ""]
    conv = state.metrics.get("convert", {}).get(name)
    if conv:
        lines += [f"Converted from the teacher: layers {conv['layers']}, groups {conv['groups']}, init {conv['init']}.", ""]
    rows = [(k, v) for k, v in ev.items() if k == name or (k in state.variants and state.variants[k].model == name)]
    if rows:
        lines += ["| form | test accuracy | macro-F1 | latency ms (batch 1) |", "|---|---|---|---|"]
        for key, r in rows:
            t = r.get("test", {})
            lat = r.get("latency", {})
            acc = f"{t['accuracy']:.4f} [{t['accuracy_ci95'][0]:.3f}, {t['accuracy_ci95'][1]:.3f}]" if t else "-"
            f1 = f"{t['macro_f1']:.4f}" if t else "-"
            ms = f"{lat['median_ms']:.1f} (seq {lat['seq']}, {lat['threads']} threads)" if lat else "-"
            lines.append(f"| {key} | {acc} | {f1} | {ms} |")
        lines.append("")
    onnx_files = sorted(p.name for p in state.model_dir(name).glob("*.onnx"))
    cls = "SqueezeBertForSequenceClassification" if model.config.model_type == "squeezebert" else "BertForSequenceClassification"
    lines += ["## Load it", "", "```python", f"from transformers import AutoTokenizer, {cls}",
              f'model = {cls}.from_pretrained("{name}")', f'tokenizer = AutoTokenizer.from_pretrained("{name}")', "```", ""]
    if onnx_files:
        lines += [f"ONNX ({', '.join(onnx_files)}): inputs input_ids, attention_mask, token_type_ids (int64, [batch, seq]); output logits.",
                  "", "```python", "import onnxruntime as ort", f'session = ort.InferenceSession("{name}/{onnx_files[-1]}")',
                  'logits = session.run(["logits"], dict(tokenizer(["some text"], return_tensors="np")))[0]', "```", ""]
    return "\n".join(lines)


def _write_metrics(folder: Path, summary: dict, state: RunState) -> None:
    atomic_write_json(folder / "metrics.json", summary | {"labels": state.task.labels, "metrics": state.metrics, "models": state.artifacts})
