"""Teacher-labelled augmentation: more texts for a small training set, in the spirit of TinyBERT's.

TinyBERT replaces words by a masked language model's guesses or by GloVe neighbours; neither is at hand
offline (a sentence-embedding teacher has no MLM head). The neighbours here come from the teacher's own input
embeddings: the tokens whose embedding vectors are closest (cosine) to the word's. Only single-piece words are
replaced, by single-piece words, so the token count stays and per-token tasks keep their alignment.

The new rows carry no labels: the distillation pass trains them on the teacher's outputs alone (the KD term).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from compress.core.hashing import stable_hash
from compress.data.encoding import Encoded
from compress.tasks.kinds import NO_LABEL


def word_tokens(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Two [vocab] bool arrays: tokens that are a word on their own (letters only, two or more; no special
    token), and WordPiece continuations (`##...`), which must not follow a replaced word."""
    vocab = tokenizer.get_vocab()
    whole, piece = np.zeros(max(vocab.values()) + 1, dtype=bool), np.zeros(max(vocab.values()) + 1, dtype=bool)
    special = set(tokenizer.all_special_tokens)
    for token, i in vocab.items():
        whole[i] = token.isalpha() and len(token) > 1 and token not in special
        piece[i] = token.startswith("##")
    return whole, piece


@torch.no_grad()
def neighbours(embeddings: torch.Tensor, eligible: np.ndarray, k: int = 8, chunk: int = 2048) -> np.ndarray:
    """[vocab, k] for every eligible token, its k nearest eligible tokens by cosine of the input embeddings
    (itself excluded); -1 rows for the rest."""
    ids = torch.from_numpy(np.flatnonzero(eligible))
    e = torch.nn.functional.normalize(embeddings[ids].float(), dim=1)
    out = np.full((len(eligible), k), -1, dtype=np.int64)
    for start in range(0, len(ids), chunk):
        sim = e[start : start + chunk] @ e.T
        sim[torch.arange(sim.shape[0]), torch.arange(start, start + sim.shape[0])] = -2.0  # never itself
        out[ids[start : start + chunk].numpy()] = ids[sim.topk(k, dim=1).indices].numpy()
    return out


def augment(enc: Encoded, copies: int, near: np.ndarray, piece: np.ndarray, prob: float, seed: int) -> Encoded:
    """`copies` variants of every row of `enc`, each single-piece word replaced by one of its neighbours (`near`,
    rows of -1 for tokens that are not words) with probability `prob`; copy after copy, without labels."""
    if enc.spans is not None:
        raise ValueError("question-answering windows are not augmented (answer spans would move)")
    rng = np.random.default_rng(seed)
    ids = np.tile(enc.input_ids.astype(np.int64), copies)
    # a word is replaced only where it stands alone: the next token does not continue it (no `##` piece after)
    alone = (near[ids, 0] >= 0) & ~np.append(piece[ids[1:]], False)
    swap = alone & (rng.random(len(ids)) < prob)
    ids[swap] = near[ids[swap], rng.integers(0, near.shape[1], int(swap.sum()))]
    n = len(enc)
    offsets = np.concatenate([[0], np.cumsum(np.tile(enc.lengths(), copies))]).astype(np.int64)
    size = len(ids) if enc.per_token else n * copies
    labels = np.full(size, np.nan, np.float32) if enc.labels.dtype.kind == "f" else np.full(size, NO_LABEL)
    key = stable_hash([enc.key, "augment", hashlib.sha256(ids.tobytes()).hexdigest()])  # the new tokens themselves
    return Encoded(
        ids.astype(enc.input_ids.dtype),
        np.tile(enc.token_type_ids, copies),
        offsets,
        labels,
        key,
        enc.per_token,
    )
