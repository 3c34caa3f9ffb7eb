"""The search space: sampling a trial's values, and checking the space before any training.

Every key of `search.space` is a recipe key path; a trial is the recipe with the sampled values set.
"""

from __future__ import annotations

import difflib
from typing import Any

import optuna

from compress.core.errors import CompressError
from compress.core.groups import (
    MATRICES,
    Groups,
    channels,
    check_groups,
    valid_groups,
)
from compress.core.hashing import stable_hash
from compress.modeling.loading import load_config
from compress.pipeline.registry import resolve_passes
from compress.recipe import Recipe, baselines, parse_recipe, set_path
from compress.recipe.search import Param, SearchSpec


def suggest(param: Param, trial: optuna.Trial, key: str) -> Any:
    """The trial's value for recipe key `key` (group counts come back as "q,k,v,post,inter,out")."""
    if param.choices is not None:
        return trial.suggest_categorical(key, param.choices)
    if param.groups is not None:
        return ",".join(str(trial.suggest_categorical(f"{key}.{m}", param.groups)) for m in MATRICES)
    assert param.low is not None and param.high is not None
    if param.is_int_range():
        return trial.suggest_int(key, int(param.low), int(param.high), step=int(param.step or 1))
    return trial.suggest_float(key, param.low, param.high, log=param.log, step=param.step)


def check_space(recipe: Recipe, spec: SearchSpec, source: str) -> None:
    """Fail before any training: every key must be a real option, every group count must divide.

    Resolves `groups_up_to` in place into the list of group counts it allows."""
    raw = recipe.raw()
    for key, param in spec.space.items():
        set_path(raw, key, param.first(), f"{source}: search.space.{key}")
    where = f"{source} (search.space values)"
    resolve_passes(parse_recipe(raw, where), where)
    baselines.check(spec.baselines, source)
    config = load_config(recipe.teacher.model, recipe.teacher.revision)
    teacher_layers = config.num_hidden_layers
    for b in spec.baselines:  # each baseline's passes (pruned: the prune pass's options) checked as its run will be
        peer = recipe.raw()
        peer["passes"] = baselines.baseline_passes(b, peer["passes"], teacher_layers, spec.student)
        where = f"{source} (search.baselines: {b.name})"
        resolve_passes(parse_recipe(peer, where), where)
    final = recipe.raw()
    for key, value in spec.finalize.set.items():
        set_path(final, key, value, f"{source}: search.finalize.set.{key}")
    where = f"{source} (search.finalize.set)"
    resolve_passes(parse_recipe(final, where), where)
    d = config.hidden_size // config.num_attention_heads
    bad = sorted(w for w in reachable(spec, ".hidden_size", config.hidden_size) if w % d or w > config.hidden_size)
    if bad:
        raise CompressError(
            f"{source}: search.space passes.convert.hidden_size: {bad} - use multiples of the teacher's head size {d} "
            f"up to its {config.hidden_size}"
        )
    groups = {k: p for k, p in spec.space.items() if k.endswith(".groups")}
    if not groups:
        return
    ffns, hiddens = (
        reachable(spec, ".intermediate_size", config.intermediate_size),
        reachable(spec, ".hidden_size", config.hidden_size),
    )
    for key, param in groups.items():
        if param.groups_up_to is not None:  # every count that divides every channel count, up to the limit
            ok = set.intersection(
                *[set(valid_groups(*io)) for h in hiddens for ffn in ffns for io in channels(h, ffn).values()]
            )
            param = spec.space[key] = Param(groups=sorted(g for g in ok if g <= param.groups_up_to))
        try:
            candidates = [Groups.parse(str(c)) for c in param.choices or []] + [
                Groups(**dict.fromkeys(MATRICES, g)) for g in param.groups or []
            ]
            for g in candidates:
                for h in sorted(hiddens):
                    for ffn in sorted(ffns):
                        check_groups(g, h, ffn)
        except ValueError as e:
            raise CompressError(f"{source}: search.space.{key}: {e}") from None


def reachable(spec: SearchSpec, option: str, full: int) -> set[int]:
    """The channel counts a searched width option (`.intermediate_size`, `.hidden_size`) may give a student."""
    return {full} | {int(v) for k, p in spec.space.items() if k.endswith(option) for v in (p.choices or []) if v}


def reachable_layers(spec: SearchSpec) -> list[int]:
    """The layer counts a searched `.layers` option may give a student (its choices, or its range's low end)."""
    out: list[int] = []
    for key, p in spec.space.items():
        if key.endswith(".layers"):
            out += [int(c) for c in p.choices or [] if c] + ([int(p.low)] if p.low is not None else [])
    return out


def seed_params(spec: SearchSpec, source: str) -> list[dict[str, Any]]:
    """`search.seeds` as Optuna parameters (what `suggest` would have drawn), each value checked against the space.

    Call after `check_space`, which resolves `groups_up_to` into the counts a seed may use."""
    out = []
    for i, seed in enumerate(spec.seeds):
        params: dict[str, Any] = {}
        for key, value in seed.items():
            where = f"{source}: search.seeds[{i}].{key}"
            if key not in spec.space:
                close = difflib.get_close_matches(key, spec.space, n=1)
                raise CompressError(
                    f"{where}: not a key of search.space{f'; did you mean {close[0]!r}?' if close else ''}"
                )
            param = spec.space[key]
            if param.groups is not None:
                counts = (
                    [int(value)] * len(MATRICES) if isinstance(value, int) else [int(x) for x in str(value).split(",")]
                )
                if len(counts) != len(MATRICES) or not set(counts) <= set(param.groups):
                    raise CompressError(
                        f"{where}: {value!r} must be {len(MATRICES)} group counts (q,k,v,post,inter,out) from "
                        f"{param.groups}"
                    )
                params |= {f"{key}.{m}": g for m, g in zip(MATRICES, counts, strict=True)}
            elif param.choices is not None:
                if value not in param.choices:
                    raise CompressError(f"{where}: {value!r} is not one of the space's choices {param.choices}")
                params[key] = value
            else:
                assert param.low is not None and param.high is not None
                if not isinstance(value, int | float) or not param.low <= value <= param.high:
                    raise CompressError(f"{where}: {value!r} is outside the space's range [{param.low}, {param.high}]")
                params[key] = int(value) if param.is_int_range() else float(value)
        out.append(params)
    return out


def fingerprint(recipe: Recipe, spec: SearchSpec) -> str:
    """What makes trials comparable: the recipe they run and the space they sample (not how many, where, how fast)."""
    base = recipe.model_dump(mode="json", exclude={"search", "threads", "device", "name", "output_dir", "cache_dir"})
    return stable_hash(
        {
            "recipe": base,
            "space": {k: p.model_dump(exclude_none=True) for k, p in spec.space.items()},
            "objectives": spec.objectives,
        }
    )
