"""Extractive question answering: SQuAD v1.1 files, and question/context windows with their answer spans.

A SQuAD file is `{"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text",
"answer_start"}]}]}]}]}`; each question becomes one row (`id`, `question`, `context`, `answers`: the gold
texts, `answer_start`: the first answer's character offset). Every answer must sit at its `answer_start` in
the context - a file where it does not is broken (or was re-tokenized), said with the question id.

A context longer than `max_length` tokens is cut into overlapping windows (`doc_stride` tokens of overlap,
as BERT's SQuAD code does); each window is one model input ("feature"), labelled with the answer's first and
last token when the answer lies wholly inside it, else with [CLS] (position 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from compress.core.errors import CompressError
from compress.core.hashing import stable_hash
from compress.data.encoding import Encoded, SpanIndex, tokenizer_fingerprint


def read_squad(path: Path) -> pd.DataFrame:
    """The questions of a SQuAD v1.1 JSON file, one row each."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CompressError(
            f'{path}: not a SQuAD v1.1 file ({e}); expected {{"data": [{{"paragraphs": [...]}}]}}'
        ) from e
    rows: list[dict] = []
    for article in data:
        for para in article.get("paragraphs", []):
            context = para["context"]
            for qa in para.get("qas", []):
                answers = qa.get("answers", [])
                for a in answers:
                    start = int(a["answer_start"])
                    if context[start : start + len(a["text"])] != a["text"]:
                        found = context[start : start + len(a["text"])]
                        raise CompressError(
                            f"{path}: question {qa.get('id')!r}: answer {a['text']!r} is not at answer_start {start} "
                            "in its context "
                            f"(found {found!r}); fix answer_start (character offset into the context)"
                        )
                rows.append(
                    {
                        "id": str(qa.get("id", len(rows))),
                        "question": qa["question"].strip(),
                        "context": context,
                        "answers": [a["text"] for a in answers],
                        "answer_start": int(answers[0]["answer_start"]) if answers else -1,
                    }
                )
    if not rows:
        raise CompressError(f"{path}: no questions found")
    df = pd.DataFrame(rows)
    df["text"] = df["question"]  # plain text for timing inputs and logs
    return df


def encode_questions(df: pd.DataFrame, tokenizer, max_length: int, doc_stride: int, max_answer_tokens: int) -> Encoded:
    """Windows over each question's context, with answer token spans as labels ([features, 2])."""
    if any(not answers for answers in df["answers"]):
        raise CompressError(
            "a question without an answer: SQuAD v1.1 questions all have one (v2.0 unanswerable ones are not supported)"
        )
    try:
        enc = tokenizer(
            df["question"].tolist(),
            df["context"].tolist(),
            truncation="only_second",
            max_length=max_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
    except Exception as e:  # the tokenizer refuses a stride that leaves no room for context
        raise CompressError(
            f"question answering: cannot window contexts ({e}); lower task.doc_stride or raise task.max_length"
        ) from e
    example = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
    if doc_stride == 0 and len(example) > len(df):
        k = int(np.bincount(example).argmax())
        raise CompressError(
            f"question {df['id'].iloc[k]!r}: its context is longer than task.max_length={max_length} tokens and "
            "task.doc_stride is 0; "
            "set task.doc_stride (e.g. 128) to read it in overlapping windows, or raise task.max_length"
        )
    ids = enc["input_ids"]
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(x) for x in ids])
    spans = np.full((int(offsets[-1]), 2), -1, dtype=np.int64)
    labels = np.zeros((len(ids), 2), dtype=np.int64)
    starts, answers = df["answer_start"].to_numpy(), df["answers"].tolist()
    for f in range(len(ids)):
        seq = enc.sequence_ids(f)
        context_tokens = [i for i, s in enumerate(seq) if s == 1]
        for i in context_tokens:
            spans[offsets[f] + i] = enc["offset_mapping"][f][i]
        q = example[f]
        a0, a1 = int(starts[q]), int(starts[q]) + len(answers[q][0])
        window = spans[offsets[f] : offsets[f + 1]]
        if context_tokens and window[context_tokens[0], 0] <= a0 and window[context_tokens[-1], 1] >= a1:
            first = next(i for i in context_tokens if window[i, 1] > a0)
            last = next(i for i in reversed(context_tokens) if window[i, 0] < a1)
            labels[f] = (first, last)
    types = enc.get("token_type_ids") or [[0] * len(x) for x in ids]
    index = SpanIndex(example, spans, df["context"].tolist(), answers, max_answer_tokens)
    return Encoded(
        input_ids=np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1])),
        token_type_ids=np.fromiter((t for x in types for t in x), dtype=np.int8, count=int(offsets[-1])),
        offsets=offsets,
        labels=labels,
        key=stable_hash(
            [
                tokenizer_fingerprint(tokenizer),
                df[["question", "context"]].values.tolist(),
                answers,
                max_length,
                doc_stride,
            ]
        ),
        spans=index,
    )
