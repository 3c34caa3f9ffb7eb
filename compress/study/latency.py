"""The study's deploy target and its latency model: which form every trial is scored in, and how fast it will be.

The search optimizes *predicted* latency (`compress.deploy.latency_model`): stable where one timing of
one trial on a shared machine is not. The model is calibrated once per study on this machine, at the
recipe's timing shape and threads, with the teacher's real forms timed in the same session, and saved in
the study folder; a worker or a resumed search loads it, and a mismatch (another machine, threads, runtime
version, shape) is detected and recalibrated.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from compress.core.arch import Architecture
from compress.core.errors import CompressError
from compress.core.groups import MATRICES, Groups
from compress.data.encoding import single_batches
from compress.data.sources import TaskData, load_task
from compress.data.splits import encode_split
from compress.deploy.forms import forms_on_disk
from compress.deploy.latency import real_inputs
from compress.deploy.latency_model import Fingerprint, LatencyModel, calibrate, fingerprint, load
from compress.deploy.targets import form_name, get_target
from compress.modeling.loading import load_config, load_tokenizer
from compress.modeling.runners import Batch
from compress.recipe import Recipe
from compress.recipe.search import SearchSpec
from compress.study.space import reachable, reachable_layers
from compress.study.target import pass_configs, timing_shape

log = logging.getLogger(__name__)
NATURAL_TEXTS = 32  # texts per timed call at natural lengths (search.latency_shape: natural)


def _space_groups(recipe: Recipe, spec: SearchSpec) -> list[int]:
    values: set[int] = set()
    for key, p in spec.space.items():
        if key.endswith(".groups"):
            values |= set(p.groups or []) | {int(x) for c in p.choices or [] for x in str(c).split(",")}
    for convert in pass_configs(recipe, "convert"):  # the recipe's own groups, typed by the convert pass
        values |= set(convert.groups.as_dict().values())
    return sorted(values | {1})


def probes(recipe: Recipe, spec: SearchSpec, config: Any) -> tuple[list[Architecture], list[Architecture]]:
    """(architectures whose blocks cover the space, whole anchor models) for calibration.

    Probes are one-layer models for each group count, FFN width and residual width the space can reach, uniform
    and with Q and each FFN half on its own, so every block a trial can use is timed; what they miss (e.g. pruned
    head counts) is timed when first needed. Anchors: the teacher, one model per group count, one mixed, and one
    per narrower width (blocks of another width cost another share of the whole: the fit must see one)."""
    teacher = Architecture.of(config)
    gs = _space_groups(recipe, spec)
    ffns = reachable(spec, ".intermediate_size", teacher.ffn)
    widths = sorted(reachable(spec, ".hidden_size", teacher.hidden), reverse=True)
    found = []
    for width in widths:
        layer = {"hidden": width, "head_size": teacher.head_size, "labels": teacher.labels}
        for g in gs:
            other = 1 if g > 1 else 2
            for f in sorted(ffns):
                for groups in ((g,) * 6, (g, other, g, g, g, other), (g, g, g, g, other, g)):
                    if all(f % x == 0 and width % x == 0 for x in groups):
                        found.append(
                            Architecture(
                                heads=[width // teacher.head_size],
                                ffn=f,
                                groups=dict(zip(MATRICES, groups, strict=True)),
                                **layer,
                            )
                        )
    half = max(1, len(teacher.heads) // 2)
    cycle = (gs * 6)[:6]
    anchors = [teacher] + [
        teacher.model_copy(update={"heads": teacher.heads[:half], "groups": Groups(*(g,) * 6).as_dict()})
        for g in gs
        if g > 1
    ]
    anchors.append(
        teacher.model_copy(update={"heads": teacher.heads[:half], "groups": dict(zip(MATRICES, cycle, strict=True))})
    )
    anchors += [teacher.model_copy(update={"hidden": w, "heads": [w // teacher.head_size] * half}) for w in widths[1:]]
    # The space's smallest corner: without it the fit extrapolates below its anchors, where per-layer costs that no
    # block carries (measured: up to 39% optimistic for 2 layers x 192 x FFN 384) are a growing share of the whole.
    least = min(reachable_layers(spec) or [half])
    corner = teacher.model_copy(
        update={"hidden": widths[-1], "heads": [widths[-1] // teacher.head_size] * least, "ffn": min(ffns)}
    )
    if corner not in anchors:
        anchors.append(corner)
    return found, anchors


def model_path(folder: Path, spec: SearchSpec) -> Path:
    return folder / f"latency_model.{get_target(spec.target).name}.json"


def timing_inputs(recipe: Recipe, spec: SearchSpec, tokenizer: Any, task: TaskData) -> tuple[list[Batch], Fingerprint]:
    """What the study's latency is measured on, and the latency model's fingerprint for it (`tokenizer`: the
    teacher's; `task`: the recipe's task, loaded).

    padded (`search.latency_shape`): one batch of real training text filling the evaluate pass's batch x seq.
    natural: NATURAL_TEXTS validation texts drawn by the recipe's seed (those finalize times at natural lengths come
    from the same draw), each a batch of one at its own length; blocks are timed at their mean token count."""
    target, threads = get_target(spec.target), recipe.threads or 1
    if spec.latency_shape == "natural":
        enc = encode_split(task, recipe.task, tokenizer, "validation", recipe.cache_path())
        texts, tokens = single_batches(enc, NATURAL_TEXTS, recipe.seed)
        return texts, fingerprint(target, max(1, round(tokens)), 1, threads, "natural")
    shape = timing_shape(recipe)
    feeds = real_inputs(tokenizer, task.splits["train"]["text"].tolist(), shape.batch, shape.seq)
    return [feeds], fingerprint(target, shape.seq, shape.batch, threads)


def latency_model(folder: Path, recipe: Recipe, spec: SearchSpec, *, calibrate_if_needed: bool = True) -> LatencyModel:
    """The study's latency model, loaded or (re)calibrated; says why it calibrates."""
    target = get_target(spec.target)
    threads = recipe.threads or 1
    path = model_path(folder, spec)
    teacher_folder = folder / "reference" / "models" / "teacher"  # the fine-tuned teacher, with the task's label count
    tokenizer, task = load_tokenizer(str(teacher_folder)), load_task(recipe.task, recipe.seed)
    inputs, fp = timing_inputs(recipe, spec, tokenizer, task)
    model, why = load(path, fp)
    if model is not None:
        return model
    if not calibrate_if_needed:
        raise CompressError(f"{path}: {why}; run compress search (without --worker) to calibrate it first")
    log.info("calibrating the latency model for %s: %s", target.name, why)
    config = load_config(str(teacher_folder))
    archs, anchors = probes(recipe, spec, config)
    teacher = {k: r for k, (_, r) in forms_on_disk(folder / "reference", "teacher", threads).items()}
    in_target = form_name("teacher", target)
    reference = (Architecture.of(config), in_target) if in_target in teacher else None
    if reference:  # the real teacher anchors the fit; no random copy of it needed
        anchors = [a for a in anchors if a != reference[0]]
    model = calibrate(target, fp, archs, anchors, teacher, inputs, runs=spec.calibration_runs, reference=reference)
    model.save(path)
    return model


def parents_model(folder: Path, spec: SearchSpec) -> LatencyModel:
    """The model the parent of `--workers` calibrated: workers run with fewer threads than the deployment they
    predict for, so they use the parent's calibration as it is."""
    path = model_path(folder, spec)
    if not path.is_file():
        raise CompressError(f"{path} is missing; workers join a study that compress search (without --worker) prepared")
    return LatencyModel.model_validate_json(path.read_text())
