"""Passes and the registry that finds them by name.

A pass is a name, a pydantic `Config` (the schema of its recipe options) and one `run` method that
takes the run state and returns it. Built-in passes live in `compress/passes/`; third-party passes are
declared by any installed package under the entry-point group `compress.passes`:

    [project.entry-points."compress.passes"]
    my_pass = "my_package.module:MyPass"

and then appear in `compress passes` and can be named in recipes without touching compress itself.
"""

from __future__ import annotations

import abc
import difflib
import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from compress.core.errors import CompressError
from compress.recipe import Recipe, explain

if TYPE_CHECKING:
    from compress.pipeline.state import RunState

ENTRY_POINT_GROUP = "compress.passes"

_BUILTIN = {
    "finetune_teacher": "compress.passes.finetune:FinetuneTeacher",
    "convert": "compress.passes.convert:Convert",
    "distill": "compress.passes.distill:Distill",
    "export": "compress.passes.export:Export",
    "quantize": "compress.passes.quantize:Quantize",
    "prune": "compress.passes.prune:Prune",
    "evaluate": "compress.passes.evaluate:Evaluate",
}


class PassConfig(BaseModel):
    """Base for pass options: unknown keys are errors, so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Pass(abc.ABC):
    """One step of a recipe. Subclasses set `name`, `Config` and implement `run`."""

    name: ClassVar[str]
    Config: ClassVar[type[PassConfig]] = PassConfig

    @abc.abstractmethod
    def run(self, state: RunState, config: Any) -> RunState:
        """Read what the pass needs from `state`, add what it produces, return the state.

        `config` is an instance of the pass's own `Config` (subclasses annotate it so)."""

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def _load(target: str) -> type[Pass]:
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Pass)):
        raise CompressError(f"{target} is registered as a pass but is not a compress.pipeline.registry.Pass subclass")
    return cls


def _targets() -> dict[str, str]:
    found = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)  # built-ins win: a plugin cannot shadow them by accident
    return found


def available_passes() -> dict[str, type[Pass]]:
    """All passes by name: built-ins plus installed plugins."""
    return {name: get_pass(name) for name in sorted(_targets())}


def get_pass(name: str) -> type[Pass]:
    targets = _targets()
    if name not in targets:
        close = difflib.get_close_matches(name, targets, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CompressError(
            f"unknown pass {name!r}{hint}; available: {', '.join(sorted(targets))}. "
            f"Plugins register under the entry-point group {ENTRY_POINT_GROUP!r}."
        )
    try:
        cls = _load(targets[name])
    except (ImportError, AttributeError) as e:
        raise CompressError(f"pass {name!r} ({targets[name]}) failed to import: {e}") from e
    return cls


def resolve_passes(recipe: Recipe, source: str = "recipe") -> list[tuple[type[Pass], PassConfig]]:
    """Each enabled pass class with its options validated against the pass's `Config` (one line per error)."""
    out = []
    for i, spec in enumerate(recipe.passes):
        if not spec.enabled:
            continue
        try:
            cls = get_pass(spec.name)
        except CompressError as e:
            raise CompressError(f"{source}: passes[{i}].name: {e}") from None
        try:
            out.append((cls, cls.Config(**spec.options)))
        except ValidationError as e:
            raise CompressError(explain(e, cls.Config, source, f"passes[{i}] ({spec.name}).options.")) from None
    return out


def describe_config(config_cls: type[PassConfig]) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) per option, for `compress passes`."""
    rows = []
    for name, field in config_cls.model_fields.items():
        kind = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        rows.append((name, kind, default, field.description or ""))
    return rows
