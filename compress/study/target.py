"""The study's deploy target as the recipe makes it: which form of the student every trial is scored in, and the
shape it is timed at.

Pass options are read only through `resolve_passes`, as each pass's own typed `Config` with its defaults, so a
default changed in a pass can never diverge from what the search assumes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from compress.core.errors import CompressError
from compress.deploy.targets import Target, check_installed, get_target
from compress.pipeline.registry import resolve_passes
from compress.recipe import Recipe
from compress.recipe.search import SearchSpec


@dataclass(frozen=True)
class Shape:
    """The evaluate pass's timing shape: what trials are measured at, so what the latency model predicts."""

    seq: int = 128
    batch: int = 1


def pass_configs(recipe: Recipe, name: str, source: str = "recipe") -> list[Any]:
    """The typed options (each pass's `Config`, defaults filled) of every enabled pass called `name`, in order."""
    return [config for cls, config in resolve_passes(recipe, source) if cls.name == name]


def timing_shape(recipe: Recipe) -> Shape:
    evaluate = pass_configs(recipe, "evaluate")
    return Shape(seq=evaluate[0].latency_seq, batch=evaluate[0].latency_batch) if evaluate else Shape()


def _makes(config: Any, student: str) -> bool:
    return student in (config.models or [student])


def _searched_off(spec: SearchSpec, kind: str) -> bool:
    """Whether the search space can switch a pass of this kind off (a `passes.<kind>...enabled` key with false)."""
    off = [k for k, p in spec.space.items() if k.endswith(".enabled") and p.choices and False in p.choices]
    return any(k.startswith(f"passes.{kind}.") for k in off)


def _target_runtime_form(recipe: Recipe, spec: SearchSpec, target: Target, source: str) -> str:
    """OpenVINO, ExecuTorch: the form the export pass's `targets` build."""
    check_installed(target.runtime)
    student = spec.student
    export = next((c for c in pass_configs(recipe, "export", source) if _makes(c, student)), None)
    made = export is not None and target.runtime in export.targets and (target.precision == "fp32" or export.int8)
    if not made or _searched_off(spec, "export"):
        int8 = ", int8: true" if target.precision == "int8" else ""
        raise CompressError(
            f"{source}: search.target {target.name} needs the student in that form in every trial: an export pass for "
            f"{student!r} with targets: [onnx, {target.runtime}]{int8}, or choose another search.target"
        )
    return f"{student}.{target.suffix}"


def _onnxruntime_form(recipe: Recipe, spec: SearchSpec, target: Target, source: str) -> str:
    """ONNX Runtime fp32 (the export pass) or int8 (a quantize pass that writes ONNX)."""
    kind = "export" if target.precision == "fp32" else "quantize"
    makers = [c for c in pass_configs(recipe, kind, source) if _makes(c, spec.student)]
    maker = next((c for c in makers if kind == "export" or c.backend != "torch"), None)
    if maker is None or _searched_off(spec, kind):
        fix = (
            "add an export pass"
            if kind == "export"
            else "add a quantize pass (backend onnxruntime or neural-compressor)"
        )
        raise CompressError(
            f"{source}: search.target {target.name} needs the student in that form in every trial: {fix} for "
            f"{spec.student!r} that the search space does not switch off, or choose another search.target"
        )
    return f"{spec.student}.{'onnx' if kind == 'export' else maker.suffix}"


def target_form(recipe: Recipe, spec: SearchSpec, source: str) -> tuple[Target, str]:
    """The study's target and the name of the student's form in it; refuses a recipe that does not make and
    evaluate it (one line naming the fix), before any training."""
    target = get_target(spec.target)
    if target.runtime == "onnxruntime":
        form = _onnxruntime_form(recipe, spec, target, source)
    elif target.runtime == "torch":
        form = spec.student
    else:
        form = _target_runtime_form(recipe, spec, target, source)
    evaluate = next(iter(pass_configs(recipe, "evaluate", source)), None)
    if target.runtime == "torch" and evaluate is not None and evaluate.latency_device == "cuda":
        raise CompressError(
            f"{source}: search.target {target.name} with evaluate.latency_device cuda: the latency model times its "
            "blocks "
            "on the CPU, so GPU timings would not match it; keep latency_device: cpu (training still uses the GPU)"
        )
    scored = evaluate is not None and any(fnmatch.fnmatch(form, p) for p in (evaluate.models or ["*"]))
    if evaluate is None or not scored or "validation" not in evaluate.splits:
        raise CompressError(
            f"{source}: the evaluate pass must score {form!r} (the student in search.target {target.name}) on "
            "validation; add it to evaluate.models and keep validation in evaluate.splits"
        )
    return target, form
