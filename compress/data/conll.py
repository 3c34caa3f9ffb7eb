"""Token-classification data: CoNLL column files and JSON lines of word and tag lists.

CoNLL (CoNLL-2003 and the many files written like it): one `token ... tag` line per word, the tag in the
last column, a blank line between sentences, `-DOCSTART-` lines ignored. Every line of a file must have
the same number of columns - a line with another count is a broken file, said with its line number.
Both readers return one row per sentence: `tokens` and `tags` (lists of str).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from compress.core.errors import CompressError

PREFIXES = ("B-", "I-", "E-", "S-")  # IOB1/IOB2 and IOBES; seqeval reads entities from these


def read_conll(path: Path) -> pd.DataFrame:
    """Sentences of a CoNLL file as rows of `tokens` and `tags`."""
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    width = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if tokens:
                    sentences.append((tokens, tags))
                tokens, tags = [], []
                continue
            if width is None:
                width = len(cols)
                if width < 2:
                    raise CompressError(
                        f"{path}:{n}: a CoNLL line needs a token and a tag (`token ... tag`), got {line.strip()!r}"
                    )
            if len(cols) != width:
                raise CompressError(
                    f"{path}:{n}: {len(cols)} columns where the file's lines have {width} ({line.strip()!r}); "
                    "a token with a space in it, or a missing tag? fix that line"
                )
            tokens.append(cols[0])
            tags.append(cols[-1])
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        raise CompressError(
            f"{path}: no sentences; a CoNLL file has `token ... tag` lines with blank lines between sentences"
        )
    return pd.DataFrame({"tokens": [s[0] for s in sentences], "tags": [s[1] for s in sentences]})


def check_sentences(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Rows whose `tokens` and `tags` are lists of strings of equal length; empty sentences dropped."""
    out = []
    for i, (tokens, tags) in enumerate(zip(df["tokens"], df["tags"], strict=True)):
        if not all(isinstance(x, (list, tuple, np.ndarray)) for x in (tokens, tags)):
            raise CompressError(
                f'{where} row {i}: tokens and tags must be lists (JSON lines: {{"tokens": [...], "tags": [...]}})'
            )
        tokens, tags = [str(t) for t in tokens], [str(t) for t in tags]
        if len(tokens) != len(tags):
            raise CompressError(
                f"{where} row {i}: {len(tokens)} tokens but {len(tags)} tags; every word needs exactly one tag"
            )
        if tokens:
            out.append((tokens, tags))
    return pd.DataFrame({"tokens": [t for t, _ in out], "tags": [g for _, g in out]})


def tag_ids(frames: dict[str, pd.DataFrame], declared: list[str] | None) -> list[str]:
    """Replace tag names by ids in every split (column `label`); the tag names in id order.

    Without `task.labels` the tags found are used, `O` first; with it, a tag outside it is an error."""
    found = sorted({t for df in frames.values() for tags in df["tags"] for t in tags})
    bad = [t for t in found if t != "O" and not t.startswith(PREFIXES)]
    if bad:
        raise CompressError(
            f"tags {bad[:5]} are not BIO tags; use O, B-TYPE, I-TYPE (or IOBES: E-, S-) so entities can be read from "
            "them"
        )
    names = list(declared) if declared else sorted(found, key=lambda t: (t != "O", t))
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise CompressError(
            f"tags {unknown[:5]} are not in task.labels {names}; add them to task.labels or fix the data"
        )
    ids = {t: i for i, t in enumerate(names)}
    for df in frames.values():
        df["label"] = [[ids[t] for t in tags] for tags in df["tags"]]
        df["text"] = [" ".join(tokens) for tokens in df["tokens"]]  # plain text: timing inputs, logs
    return names


def sentence_frames(
    raw: dict[str, pd.DataFrame], dataset: str, tokens: str, tags: str, declared: list[str] | None
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Token-classification splits from the read files: sentences with tag ids; the tag names in id order."""
    frames = {}
    for split, df in raw.items():
        missing = [c for c in (tokens, tags) if c not in df.columns]
        if missing:
            raise CompressError(
                f"dataset {dataset!r} ({split}) has no column {missing[0]!r}; columns are {list(df.columns)} - token "
                "classification "
                "reads CoNLL files (train.txt: `token ... tag` lines) or JSON lines with token and tag lists "
                "(task.text_column / task.label_column)"
            )
        frames[split] = check_sentences(df.rename(columns={tokens: "tokens", tags: "tags"}), f"{dataset} ({split})")
    frames = {s: df for s, df in frames.items() if len(df)}
    if "train" not in frames:
        raise CompressError(f"dataset {dataset!r} has no training sentences")
    return frames, tag_ids(frames, declared)
