"""The study's reference run: the teacher measured once, in every deploy form, before any trial.

Every speed-up a study reports is against the fastest of these forms, timed at the trials' shape.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from compress.core.atomic import atomic_write_json
from compress.core.frontier import TeacherReference
from compress.core.hashing import stable_hash
from compress.deploy.matmul_form import FORM_VERSION
from compress.deploy.targets import baseline_runtimes, get_target
from compress.pipeline.runner import run_recipe
from compress.recipe import Recipe, parse_recipe
from compress.study.target import pass_configs, timing_shape

log = logging.getLogger(__name__)


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
    evaluate = pass_configs(recipe, "evaluate")
    timing = {k: getattr(evaluate[0], k) for k in ("latency_batch", "latency_seq", "latency_runs")} if evaluate else {}
    natural = recipe.search.finalize.natural_texts if recipe.search else 0
    raw = recipe.raw(name="reference", output_dir=str(folder), cache_dir=str(recipe.cache_path()))
    raw["passes"] = [
        *lead,
        {"name": "export", "options": {"models": ["teacher"]} | _teacher_targets(recipe)},
        {"name": "quantize", "options": {"models": ["teacher"], "backend": "onnxruntime", "mode": "dynamic"}},
        {"name": "evaluate", "options": {"models": ["teacher*"], "latency": True, "latency_natural": natural} | timing},
    ]
    # The inference form's version too: teacher forms exported by an older graph would time a different model.
    key = stable_hash(raw | {"threads": None, "inference_form": FORM_VERSION})
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
        timing_shape(recipe).seq,
    )
    return teacher


def _teacher_targets(recipe: Recipe) -> dict:
    """The teacher also in OpenVINO when installed and in the study's target runtime (both precisions): scored and
    timed in the reference run, so the latency model anchors on it and speed-ups are against its fastest form."""
    target = get_target(recipe.search.target) if recipe.search else None
    wanted = dict.fromkeys([*baseline_runtimes(), *([target.runtime] if target else [])])
    runtimes = [r for r in wanted if r not in ("torch", "onnxruntime")]
    return {"targets": ["onnx", *runtimes], "int8": True} if runtimes else {}
