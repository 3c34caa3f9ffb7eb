"""What a distill pass trains on: a seeded subset of the task's train split, plus teacher-labelled extra texts
(unlabeled rows or a file of texts; augmented copies of the training texts)."""

from __future__ import annotations

import logging
from typing import NamedTuple, Protocol

import numpy as np
import pandas as pd
import torch

from compress.core.errors import CompressError
from compress.data.augment import augment, neighbours, word_tokens
from compress.data.encoding import Encoded, encode
from compress.data.readers import read_texts
from compress.pipeline.state import RunState

log = logging.getLogger(__name__)


class TextOptions(Protocol):
    """The distill options that choose its texts (`Distill.Config`)."""

    @property
    def max_train_samples(self) -> int | None: ...

    @property
    def unlabeled(self) -> int: ...

    @property
    def unlabeled_source(self) -> str: ...

    @property
    def unlabeled_column(self) -> str: ...

    @property
    def augment(self) -> int: ...

    @property
    def augment_prob(self) -> float: ...


class TrainingData(NamedTuple):
    full: Encoded  # the task's whole train split (what the teacher cache is keyed by)
    idx: np.ndarray | None  # the labelled rows distilled (None: all)
    train: Encoded  # those rows, then the extra texts
    extras: list[Encoded]  # teacher-labelled texts: unlabeled rows, augmented copies
    labelled: int


def training_data(state: RunState, config: TextOptions) -> TrainingData:
    """The texts every student of the pass is distilled on: a seeded subset of the train split plus the extras."""
    full = state.encoded("train")
    idx = None
    if config.max_train_samples and config.max_train_samples < len(full):
        idx = np.sort(np.random.default_rng(state.seed).permutation(len(full))[: config.max_train_samples])
    train = full.subset(idx) if idx is not None else full
    extras = [_unlabeled(state, config)] if config.unlabeled else []
    if config.augment:
        extras.append(_augmented(state, config, train))
    labelled = len(train)
    for extra in extras:
        train = train.concat(extra)
    return TrainingData(full, idx, train, extras, labelled)


def _augmented(state: RunState, config: TextOptions, train: Encoded) -> Encoded:
    """`config.augment` copies of the labelled training texts with words swapped for their neighbours in the
    teacher's embedding space (`compress.data.augment`), for the teacher to label."""
    if state.task.kind.name == "question_answering":
        raise CompressError("distill.augment: question answering is not augmented (answer spans); set augment: 0")
    assert state.teacher is not None
    whole, piece = word_tokens(state.tokenizer)
    weight = state.teacher.get_input_embeddings().weight
    assert isinstance(weight, torch.Tensor)
    near = neighbours(weight.detach().cpu(), whole)
    extra = augment(train, config.augment, near, piece, config.augment_prob, state.seed)
    log.info("distill: %d augmented texts (%d per training text)", len(extra), config.augment)
    return extra


def _unlabeled(state: RunState, config: TextOptions) -> Encoded:
    """`config.unlabeled` texts for the teacher to label, tokenized like the task (no labels)."""
    if state.task.kind.name == "question_answering":
        raise CompressError(
            "distill.unlabeled: question answering distills on its labelled questions only; set distill.unlabeled: 0"
        )
    if config.unlabeled_source == "unused":
        texts = state.task.unused.drop(columns=["label"], errors="ignore")
        if texts.empty:
            raise CompressError(
                "distill.unlabeled: the task has no unused training rows (task.max_train_samples keeps them all); "
                "set distill.unlabeled_source to a file of texts, or lower task.max_train_samples"
            )
    else:
        texts = read_texts(
            config.unlabeled_source, config.unlabeled_column, "text_pair" if state.task.is_pair else None
        )
        if state.task.kind.per_token:  # words as whitespace splits them (CoNLL's own tokenization is unknown here)
            texts = pd.DataFrame({"tokens": texts["text"].str.split()})
    if state.task.kind.per_token:
        texts = texts[["tokens"]]
    picked = texts.iloc[
        np.sort(np.random.default_rng(state.seed).permutation(len(texts))[: config.unlabeled])
    ].reset_index(drop=True)
    if len(picked) < config.unlabeled:
        log.warning(
            "distill.unlabeled asks for %d texts; %s has %d, all used",
            config.unlabeled,
            config.unlabeled_source,
            len(picked),
        )
    return encode(picked, state.tokenizer, state.recipe.task.max_length, state.cache_dir)
