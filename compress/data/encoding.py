"""Tokenized splits, cached on disk, and padded batches.

Examples are stored unpadded (ragged) and padded per batch, so short tweets do not pay for the longest
one. Each batch carries the example indices, which is how the distillation pass finds cached teacher
outputs for exactly these examples. Token-classification splits (sentences of words) keep one label per
token, flat like the token ids: a word's tag id at its first sub-token, NO_LABEL elsewhere.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from compress.core.atomic import atomic_path
from compress.core.hashing import stable_hash
from compress.tasks.kinds import NO_LABEL, UNTAGGED

log = logging.getLogger(__name__)

# what every BERT/SqueezeBERT form takes, in this order
MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
)


def placeholder_inputs(batch: int, seq: int) -> tuple[torch.Tensor, ...]:
    """MODEL_INPUTS as exporters trace them: ones for token ids and mask, zeros for token types."""
    return tuple(
        (torch.zeros if n == "token_type_ids" else torch.ones)(batch, seq, dtype=torch.long) for n in MODEL_INPUTS
    )


@dataclass
class SpanIndex:
    """Extractive QA: what turns a split's per-token start/end logits back into answer text."""

    example: np.ndarray  # [features] the question each window belongs to
    char_spans: np.ndarray  # [total_tokens, 2] each context token's character span in its context; (-1, -1) elsewhere
    contexts: list[str]  # per question
    answers: list[list[str]]  # gold answer texts per question
    max_answer_tokens: int = 30

    def select(self, idx: np.ndarray, flat: np.ndarray) -> SpanIndex:
        """The windows `idx` (flat token positions `flat`); questions keep their numbers."""
        return SpanIndex(self.example[idx], self.char_spans[flat], self.contexts, self.answers, self.max_answer_tokens)


@dataclass
class Encoded:
    """One tokenized split: flat token arrays plus offsets (ragged rows)."""

    input_ids: np.ndarray  # [total_tokens] int32
    token_type_ids: np.ndarray  # [total_tokens] int8
    offsets: np.ndarray  # [n + 1] int64
    # [n] int64 class ids (NO_LABEL: none, distillation only) or float32 scores (NaN: none); per_token: [total_tokens]
    labels: np.ndarray
    key: str  # content key: same key <=> same tokens
    per_token: bool = False  # labels per token (token classification)
    spans: SpanIndex | None = None  # extractive QA: rows are context windows, labels [rows, 2] answer start/end tokens

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def concat(self, other: Encoded) -> Encoded:
        """This split followed by `other` (own content key)."""
        if self.spans is not None or other.spans is not None:
            raise ValueError("question-answering splits are not concatenated (their windows index their own questions)")
        offsets = np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]])
        return Encoded(
            np.concatenate([self.input_ids, other.input_ids]),
            np.concatenate([self.token_type_ids, other.token_type_ids]),
            offsets,
            _join_labels(self.labels, other.labels),
            stable_hash([self.key, other.key]),
            self.per_token,
        )

    def subset(self, idx: np.ndarray) -> Encoded:
        """The examples `idx` as their own split (own content key, so caches keyed by it stay exact)."""
        idx = np.asarray(idx, dtype=np.int64)
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(self.lengths()[idx])
        rows = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]
        flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        labels = self.labels[flat] if self.per_token else self.labels[idx]
        spans = self.spans.select(idx, flat) if self.spans is not None else None
        key = stable_hash([self.key, idx.tobytes().hex()])
        return Encoded(self.input_ids[flat], self.token_type_ids[flat], offsets, labels, key, self.per_token, spans)


def _labels(column: pd.Series) -> np.ndarray:
    return column.to_numpy(dtype=np.float32 if pd.api.types.is_float_dtype(column) else np.int64)


def _join_labels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Scores followed by texts without labels (or the reverse): the missing ones become NaN, as regression marks
    them."""
    if a.dtype == b.dtype:
        return np.concatenate([a, b])
    as_float = lambda x: x if x.dtype.kind == "f" else np.where(x == NO_LABEL, np.nan, x).astype(np.float32)
    return np.concatenate([as_float(a), as_float(b)])


def tokenizer_fingerprint(tokenizer) -> str:
    """Identity of a tokenizer's behaviour (vocab, normalizer, special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        # Truncation/padding are per-call settings the tokenizer remembers; they are not its identity.
        spec.pop("truncation", None)
        spec.pop("padding", None)
    else:
        spec = sorted(tokenizer.get_vocab().items())
    return stable_hash([type(tokenizer).__name__, spec])


def encode(df: pd.DataFrame, tokenizer, max_length: int, cache_dir: Path | None) -> Encoded:
    """Tokenize a split (text, optional text_pair, label; or sentences: tokens, label per word); reuse the
    cached result for the same content."""
    words = "tokens" in df
    content = (
        stable_hash([df["tokens"].tolist(), df["label"].tolist() if "label" in df else None])
        if words
        else str(pd.util.hash_pandas_object(df, index=False).sum())
    )
    key = stable_hash([tokenizer_fingerprint(tokenizer), content, len(df), max_length])
    path = Path(cache_dir) / "tokens" / f"{key}.npz" if cache_dir else None
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return Encoded(
                    z["input_ids"], z["token_type_ids"], z["offsets"], z["labels"], key, bool(z["per_token"])
                )
        except (OSError, ValueError, KeyError):
            log.warning("token cache %s is unreadable; rebuilding it", path)
    if words:
        enc = tokenizer(df["tokens"].tolist(), is_split_into_words=True, truncation=True, max_length=max_length)
    else:
        pair = df["text_pair"].astype(str).tolist() if "text_pair" in df else None
        enc = tokenizer(df["text"].astype(str).tolist(), pair, truncation=True, max_length=max_length)
    ids = enc["input_ids"]
    types = enc.get("token_type_ids") or [[0] * len(x) for x in ids]
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(x) for x in ids])
    if words:
        labels = _word_labels(enc, df["label"].tolist() if "label" in df else None, df["tokens"].tolist(), max_length)
    else:
        labels = _labels(df["label"]) if "label" in df else np.full(len(df), NO_LABEL, dtype=np.int64)
    out = Encoded(
        input_ids=np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1])),
        token_type_ids=np.fromiter((t for x in types for t in x), dtype=np.int8, count=int(offsets[-1])),
        offsets=offsets,
        labels=labels,
        key=key,
        per_token=words,
    )
    if path is not None:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(
                tmp,
                input_ids=out.input_ids,
                token_type_ids=out.token_type_ids,
                offsets=out.offsets,
                labels=out.labels,
                per_token=np.array(words),
            )
    return out


def _word_labels(enc, tags: list[list[int]] | None, tokens: list[list[str]], max_length: int) -> np.ndarray:
    """Per-token labels: each word's tag id at its first sub-token (UNTAGGED without tags), NO_LABEL at the
    others and at [CLS]/[SEP].

    Words cut off by truncation have no token, so they are neither trained nor scored; how many is logged."""
    out: list[int] = []
    lost = 0
    for i in range(len(enc["input_ids"])):
        previous = None
        seen = 0
        for w in enc.word_ids(i):
            first = w is not None and w != previous
            out.append(NO_LABEL if not first else UNTAGGED if tags is None else tags[i][w])
            seen += first
            previous = w
        lost += len(tokens[i]) - seen
    if lost:
        log.warning(
            "%d words lie beyond task.max_length=%d tokens and are left out (not trained, not scored); raise "
            "max_length",
            lost,
            max_length,
        )
    return np.asarray(out, dtype=np.int64)


def collate(enc: Encoded, idx: np.ndarray, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad the examples `idx` to their longest length."""
    starts, ends = enc.offsets[idx], enc.offsets[idx + 1]
    width = int((ends - starts).max())
    input_ids = np.full((len(idx), width), pad_id, dtype=np.int64)
    token_type_ids = np.zeros((len(idx), width), dtype=np.int64)
    mask = np.zeros((len(idx), width), dtype=np.int64)
    for r, (s, e) in enumerate(zip(starts, ends, strict=True)):
        input_ids[r, : e - s] = enc.input_ids[s:e]
        token_type_ids[r, : e - s] = enc.token_type_ids[s:e]
        mask[r, : e - s] = 1
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(mask),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "labels": torch.from_numpy(_padded_labels(enc, idx, width) if enc.per_token else enc.labels[idx]),
        "index": torch.from_numpy(idx.astype(np.int64)),
    }


def _padded_labels(enc: Encoded, idx: np.ndarray, width: int) -> np.ndarray:
    out = np.full((len(idx), width), NO_LABEL, dtype=np.int64)
    for r, i in enumerate(idx):
        s, e = enc.offsets[i], enc.offsets[i + 1]
        out[r, : e - s] = enc.labels[s:e]
    return out


def batches(
    enc: Encoded, batch_size: int, order: np.ndarray | None = None, pad_id: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield padded batches in `order` (default: as stored). See `shuffled` and `by_length`."""
    order = np.arange(len(enc)) if order is None else order
    for i in range(0, len(order), batch_size):
        yield collate(enc, order[i : i + batch_size], pad_id)


def shuffled(enc: Encoded, seed: int, batch_size: int = 1, pool: int = 50) -> np.ndarray:
    """A deterministic training order (pass seed + epoch for a new order each epoch).

    Length-grouped: shuffle, sort each pool of `pool` batches by length, cut into batches, shuffle the
    batches. Batches hold similar lengths (little padding) while their order stays random.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(enc))
    if batch_size <= 1:
        return order
    lengths, size = enc.lengths(), batch_size * pool
    pooled = [p[np.argsort(-lengths[p], kind="stable")] for p in np.split(order, range(size, len(order), size))]
    chunks = [c for p in pooled for c in np.split(p, range(batch_size, len(p), batch_size))]
    # a short last batch stays last, so `batches` cuts on chunk edges
    full = [c for c in chunks if len(c) == batch_size]
    return np.concatenate([full[i] for i in rng.permutation(len(full))] + [c for c in chunks if len(c) != batch_size])


def single_batches(enc: Encoded, n: int, seed: int) -> tuple[list[dict[str, torch.Tensor]], float]:
    """`n` examples drawn by seed, each as a batch of one at its own length, and their mean token count."""
    idx = np.sort(np.random.default_rng(seed).permutation(len(enc))[:n])
    return [collate(enc, np.array([i])) for i in idx], float(enc.lengths()[idx].mean()) if len(idx) else 0.0


def by_length(enc: Encoded) -> np.ndarray:
    """Longest-first order for inference: batches of similar length waste little on padding."""
    return np.argsort(-enc.lengths(), kind="stable")


def num_batches(enc: Encoded, batch_size: int) -> int:
    return (len(enc) + batch_size - 1) // batch_size
