"""Peer baselines as recipe rewrites: what an engineer would build without compress.

    layerdrop   DistilBERT-style: every other teacher layer, dense (groups 1), distilled
    pruned      the teacher with whole heads and FFN channels pruned (Taylor importance), distilled

A baseline replaces the study recipe's `convert` pass by its own builder and keeps everything after it
(distill, export, quantize, evaluate); `compress finalize` trains it with the final students' budget. The
builders only rewrite recipe data, so they live with the recipe language: the search checks baseline names
before any training, and finalize trains them, without either importing the other.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

from compress.core.errors import CompressError
from compress.recipe.loading import explain
from compress.recipe.search import BaselineSpec


class LayerdropOptions(BaseModel):
    """`layerdrop`'s options: which teacher layers the dense student keeps (default every other one)."""

    model_config = ConfigDict(extra="forbid")
    layers: list[NonNegativeInt] | None = Field(None, min_length=1)


def _layerdrop(teacher_layers: int, student: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    given = LayerdropOptions.model_validate(options).layers
    keep = given or list(range(1, teacher_layers, 2)) or [0]  # DistilBERT: every other layer
    return [
        {
            "name": "convert",
            "options": {"student": student, "layers": keep, "groups": "1,1,1,1,1,1", "init": "permuted"},
        }
    ]


def _pruned(teacher_layers: int, student: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    opts = {"ffn_ratio": 0.5, "head_ratio": 0.25, "importance": "taylor"} | options
    return [{"name": "prune", "options": {"model": "teacher", "output": student, **opts}}]


BASELINES: dict[str, Callable[[int, str, dict[str, Any]], list[dict[str, Any]]]] = {
    "layerdrop": _layerdrop,
    "pruned": _pruned,
}


def check(baselines: list[BaselineSpec], source: str) -> None:
    """Every baseline name must exist and `layerdrop`'s options be its own (one line naming the fix); `pruned`'s
    options are the prune pass's, checked with the passes of the baseline's recipe."""
    for i, b in enumerate(baselines):
        if b.name not in BASELINES:
            close = difflib.get_close_matches(b.name, BASELINES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CompressError(
                f"{source}: search.baselines[{i}]: unknown baseline {b.name!r}{hint} available: {', '.join(BASELINES)}"
            )
        if b.name == "layerdrop":
            try:
                LayerdropOptions.model_validate(b.options)
            except ValidationError as e:
                where = f"search.baselines[{i}] (layerdrop).options."
                raise CompressError(explain(e, LayerdropOptions, source, where)) from None


def baseline_passes(
    spec: BaselineSpec, passes: list[dict[str, Any]], teacher_layers: int, student: str
) -> list[dict[str, Any]]:
    """The study recipe's passes with its first `convert` replaced by the baseline's builder."""
    at = next((i for i, p in enumerate(passes) if p["name"] == "convert"), None)
    if at is None:
        raise CompressError(
            "search.baselines need a convert pass in the recipe: a baseline takes its place and keeps the passes "
            "after it"
        )
    return [*passes[:at], *BASELINES[spec.name](teacher_layers, student, dict(spec.options)), *passes[at + 1 :]]
