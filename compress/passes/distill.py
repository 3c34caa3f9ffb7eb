"""Knowledge distillation of each student from the teacher (losses in `compress.train.losses`).

Teacher outputs come from the on-disk cache (`compress.train.teacher_cache`), so the teacher runs once
per training set, not once per student per epoch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
import torch
from pydantic import Field, PositiveInt, model_validator

from compress.core.arch import Architecture
from compress.core.errors import CompressError
from compress.data.encoding import Encoded, tokenizer_fingerprint
from compress.modeling.loading import load_student, load_tokenizer
from compress.passes.distill_data import TrainingData, training_data
from compress.passes.options import TrainOptions
from compress.pipeline.registry import Pass
from compress.pipeline.state import RunState
from compress.train.loop import fit
from compress.train.losses import DistillLoss, orders_of
from compress.train.teacher_cache import TeacherOutputs, load_or_compute

log = logging.getLogger(__name__)


class Distill(Pass):
    """Distill every student (or the named ones) from the teacher: KD + CE, optional hidden/attention losses."""

    name = "distill"

    class Config(TrainOptions):
        students: list[str] | None = Field(None, description="students to train; default: all in the run")
        student_path: str | None = Field(None, description="also load a saved student folder (named by its folder)")
        temperature: float = Field(2.0, gt=0)
        alpha: float = Field(0.5, ge=0, le=1, description="weight of the KD term; 1 - alpha weighs cross-entropy")
        hidden_weight: float = Field(0.0, ge=0)
        hidden_map: list[tuple[int, int]] | None = Field(
            None, description="[student, teacher] hidden-state indices (0 = embeddings); default: the converted layers"
        )
        attention_weight: float = Field(0.0, ge=0)
        attention_map: list[tuple[int, int]] | None = Field(
            None, description="[student, teacher] layer indices; default: the converted layers"
        )
        cache_teacher: bool = Field(True, description="cache teacher outputs on disk (off: run the teacher every step)")
        max_train_samples: PositiveInt | None = Field(
            None, description="distill on a seeded random subset of the train split (fast search trials)"
        )
        unlabeled: int = Field(
            0, ge=0, description="extra texts labelled by the teacher (KD term only): more data for the same labels"
        )
        unlabeled_source: str = Field(
            "unused",
            description="'unused': the task's training rows beyond task.max_train_samples; or a .txt / table file",
        )
        unlabeled_column: str = Field(
            "text", description="text column of an unlabeled table (text_pair too for sentence-pair tasks)"
        )
        augment: int = Field(
            0,
            ge=0,
            description="teacher-labelled copies of each training text, words replaced by their embedding neighbours",
        )
        augment_prob: float = Field(0.3, gt=0, le=1, description="chance that a word of an augmented copy is replaced")
        intermediate_epochs: int = Field(
            0,
            ge=0,
            description="epochs of hidden-state/attention losses alone before `epochs` with the prediction loss",
        )

        @model_validator(mode="after")
        def _stage_needs_a_layer_loss(self) -> Distill.Config:
            if self.intermediate_epochs and not (self.hidden_weight or self.attention_weight):
                raise ValueError("intermediate_epochs needs hidden_weight or attention_weight > 0 (what it trains on)")
            return self

    def run(self, state: RunState, config: Config) -> RunState:
        if state.teacher is None:
            raise CompressError("distill needs a teacher; add a teacher: section to the recipe")
        if config.student_path:
            self._load_external(state, config.student_path)
        names = config.students or list(state.students)
        missing = [n for n in names if n not in state.students]
        if not names or missing:
            raise CompressError(
                f"distill: no student {missing or ''} in this run (have {list(state.students)}); add a convert pass "
                "before distill"
            )
        data = training_data(state, config)  # the same texts for every student: built (and augmented) once
        for name in names:
            state.report(self.name)[name] = self._distill(state, config, name, data)
        return state

    def _load_external(self, state: RunState, path: str) -> None:
        assert state.teacher is not None
        student = load_student(path)
        theirs, ours = tokenizer_fingerprint(load_tokenizer(path)), tokenizer_fingerprint(state.tokenizer)
        if theirs != ours or student.config.vocab_size != state.teacher.config.vocab_size:
            raise CompressError(
                f"student {path} uses a different tokenizer than the teacher; distillation needs identical token ids - "
                "convert the student from this teacher"
            )
        state.students[path.rstrip("/").split("/")[-1]] = student

    def _distill(self, state: RunState, config: Config, name: str, data: TrainingData) -> dict:
        student, teacher = state.students[name], state.teacher
        assert teacher is not None
        hidden_map, attn_map = _layer_maps(state, config, name)
        full, idx, train, extras, labelled = data
        t0 = time.perf_counter()
        cached, cache_status = _teacher_outputs(state, config, full, idx, extras, hidden_map, attn_map)
        cache_seconds = time.perf_counter() - t0
        proj, orders = torch.nn.ModuleDict(), orders_of(state.conversions.get(name))
        narrowed = (h := orders.get("hidden_order")) is not None and len(h) == student.config.hidden_size
        if hidden_map and student.config.hidden_size != teacher.config.hidden_size and not narrowed:
            for s, _ in hidden_map:  # learned projection to the teacher's width (a narrowed student: its channels)
                proj[str(s)] = torch.nn.Linear(student.config.hidden_size, teacher.config.hidden_size).to(state.device)
        teacher.eval().to(state.device)
        loss = DistillLoss(
            teacher=teacher,
            temperature=config.temperature,
            alpha=config.alpha,
            cached=cached,
            hidden_map=hidden_map,
            hidden_weight=config.hidden_weight,
            attention_map=attn_map,
            attention_weight=config.attention_weight,
            proj=proj,
            kind=state.task.kind,
            **orders,
        )
        on_validation = state.on_validation
        report = (lambda epoch, acc: on_validation(name, epoch, acc, student)) if on_validation else None
        history: list[dict] = []
        stages = [(loss, config.epochs, "")]
        if config.intermediate_epochs:  # TinyBERT: the intermediate layers first, then the predictions
            stages.insert(0, (replace(loss, prediction_weight=0.0), config.intermediate_epochs, "layers"))
        for stage_loss, epochs, what in stages:
            history += fit(
                student,
                stage_loss,
                train,
                state.encoded("validation"),
                replace(config.schedule(), epochs=epochs),
                state.task,
                device=state.device,
                seed=state.seed,
                desc=f"distill {name}" + (f" ({what})" if what else ""),
                extra_params=list(proj.parameters()),
                on_epoch_end=report if not what else None,
            )
        return {
            "history": history,
            "metric": state.task.metric,
            "best_val_score": max(h["val_score"] for h in history),
            "examples": labelled,
            "unlabeled_examples": len(train) - labelled,
            "teacher_cache": cache_status,
            "teacher_cache_seconds": cache_seconds,
            "seconds_per_epoch": sum(h["train_seconds"] for h in history) / len(history),
        }


LayerMap = list[tuple[int, int]]  # (student, teacher) indices


def _layer_maps(state: RunState, config: Distill.Config, name: str) -> tuple[LayerMap, LayerMap]:
    """(hidden-state map, attention map): which teacher layer each student layer learns from; by default the
    layer it was converted from (empty when that loss is off)."""
    student, teacher = state.students[name], state.teacher
    conv = state.conversions.get(name)
    layers = conv.teacher_layers if conv else list(range(student.config.num_hidden_layers))
    hidden: LayerMap = []
    if config.hidden_weight:  # hidden states are indexed from the embeddings (0), so layer i is i + 1
        pairs = [(i + 1, t + 1) for i, t in enumerate(layers)]
        hidden = _check_map(config.hidden_map, pairs, student, teacher, "hidden_map", offset=1)
    attention: LayerMap = []
    if config.attention_weight:
        attention = _check_map(
            config.attention_map, list(enumerate(layers)), student, teacher, "attention_map", offset=0
        )
        assert teacher is not None
        ours, theirs = Architecture.of(student.config).heads, Architecture.of(teacher.config).heads
        ordered = len(conv.head_orders) if conv else 0
        odd = [(s, t) for s, t in attention if ours[s] != theirs[t] and s >= ordered]
        if odd:
            s, t = odd[0]
            raise CompressError(
                f"distill.attention_weight: student {name} layer {s} has {ours[s]} heads, teacher layer {t} "
                f"{theirs[t]}, and no record of which teacher heads it kept (a student loaded from a folder); "
                "set attention_weight: 0 for it, or convert and prune it in this run"
            )
    return hidden, attention


def _teacher_outputs(
    state: RunState,
    config: Distill.Config,
    full: Encoded,
    idx: np.ndarray | None,
    extras: list[Encoded],
    hidden_map: LayerMap,
    attn_map: LayerMap,
) -> tuple[TeacherOutputs | None, str]:
    """The teacher's outputs on the examples distilled, from the on-disk cache (or None: computed live), and how
    the cache answered. Cached per whole split (the train split; unlabeled and augmented texts) and sliced: a study's
    trials, final students and baselines distill different subsets of one split and share one teacher pass over it."""
    if not config.cache_teacher:
        return None, "off"
    teacher = state.teacher
    assert teacher is not None
    outputs = sorted({t for _, t in hidden_map}), sorted({t for _, t in attn_map})
    cached, status = load_or_compute(teacher, full, state.device, state.cache_dir, *outputs)
    cached = cached.select(idx) if idx is not None else cached
    for extra in extras:
        more, extra_status = load_or_compute(teacher, extra, state.device, state.cache_dir, *outputs)
        cached, status = cached.concat(more), f"{status}; extra texts {extra_status}"
    return cached, status


def _check_map(given, default, student, teacher, what: str, offset: int) -> list[tuple[int, int]]:
    """Validate a [student, teacher] layer map: every index must exist in its model."""
    pairs = [(int(s), int(t)) for s, t in (given if given is not None else default)]
    s_max, t_max = student.config.num_hidden_layers - 1 + offset, teacher.config.num_hidden_layers - 1 + offset
    for s, t in pairs:
        if not (0 <= s <= s_max and 0 <= t <= t_max):
            raise CompressError(
                f"distill.{what} pair [{s}, {t}] names a layer that does not exist: student has 0..{s_max}, teacher "
                f"0..{t_max}"
            )
    return pairs
