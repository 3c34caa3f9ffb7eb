"""Tokenization cache, batching order, tokenizer identity."""

from __future__ import annotations

import numpy as np

from compress.data.encoding import batches, by_length, encode, shuffled, tokenizer_fingerprint
from conftest import make_rows


def _df(n=50):
    df = make_rows(n).rename(columns={"sentiment": "label"})
    df["label"] = df["label"].map({"negative": 0, "neutral": 1, "positive": 2})
    return df[["text", "label"]]


def test_encode_cached_roundtrip(tmp_path, tokenizer):
    df = _df()
    a = encode(df, tokenizer, 16, tmp_path)
    assert len(list((tmp_path / "tokens").glob("*.npz"))) == 1
    b = encode(df, tokenizer, 16, tmp_path)
    assert a.key == b.key and np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.offsets, b.offsets)
    assert encode(df, tokenizer, 8, tmp_path).key != a.key  # max_length is part of the key
    assert a.lengths().max() <= 16


def test_fingerprint_ignores_remembered_truncation(tokenizer):
    before = tokenizer_fingerprint(tokenizer)
    tokenizer(["some text here"], truncation=True, max_length=4)
    assert tokenizer_fingerprint(tokenizer) == before


def test_shuffled_is_a_length_grouped_permutation(tokenizer):
    df = _df(203)
    df["text"] = [" ".join(["word"] * (1 + i % 13)) for i in range(203)]  # lengths 3..15 tokens
    enc = encode(df, tokenizer, 16, None)
    order = shuffled(enc, seed=1, batch_size=8, pool=4)
    assert sorted(order.tolist()) == list(range(203))
    assert np.array_equal(order, shuffled(enc, seed=1, batch_size=8, pool=4))
    assert not np.array_equal(order, shuffled(enc, seed=2, batch_size=8, pool=4))
    sizes = [len(b["labels"]) for b in batches(enc, 8, order)]
    assert sizes[:-1] == [8] * (len(sizes) - 1) and sizes[-1] == 203 % 8
    waste = lambda o: sum(b["attention_mask"].numel() - b["attention_mask"].sum().item() for b in batches(enc, 8, o))
    assert waste(order) < waste(np.random.default_rng(1).permutation(203))


def test_batches_pad_and_carry_indices(tokenizer):
    enc = encode(_df(10), tokenizer, 16, None)
    seen = []
    for b in batches(enc, 4, by_length(enc)):
        assert b["input_ids"].shape == b["attention_mask"].shape
        assert (b["attention_mask"].sum(1).numpy() == enc.lengths()[b["index"].numpy()]).all()
        seen += b["index"].tolist()
    assert sorted(seen) == list(range(10))


def test_subset_keeps_rows_and_changes_key(tokenizer):
    import numpy as np
    import pandas as pd

    from compress.data.encoding import collate, encode

    df = pd.DataFrame({"text": ["a b c", "good day", "x", "love the food here"], "label": [0, 1, 2, 1]})
    enc = encode(df, tokenizer, 16, None)
    sub = enc.subset(np.array([3, 1]))
    assert len(sub) == 2 and sub.key != enc.key and list(sub.labels) == [1, 1]
    full, part = collate(enc, np.array([3, 1])), collate(sub, np.array([0, 1]))
    assert all(np.array_equal(full[k].numpy(), part[k].numpy()) for k in ("input_ids", "attention_mask", "labels"))
