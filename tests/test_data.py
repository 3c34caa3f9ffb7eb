"""Task data: sources, column mapping, label checks, deterministic splits, bad inputs."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from compress.core.errors import CompressError
from compress.data.sources import load_task
from compress.recipe.task import TaskSpec
from conftest import make_rows


def test_embedded_default_loads_offline_with_three_labels():
    task = load_task(TaskSpec(max_train_samples=100, max_validation_samples=50, max_test_samples=50), seed=0)
    assert task.labels == ["negative", "neutral", "positive"]
    assert [len(task.splits[s]) for s in ("train", "validation", "test")] == [100, 50, 50]
    assert set(task.splits["train"]["label"]) <= {0, 1, 2} and not task.is_pair


def test_splits_deterministic_by_seed_and_disjoint(tiny_csv):
    spec = TaskSpec(dataset=str(tiny_csv), label_column="sentiment")
    a, b, c = load_task(spec, 1), load_task(spec, 1), load_task(spec, 2)
    assert all(a.splits[s].equals(b.splits[s]) for s in a.splits) and not a.splits["train"].equals(c.splits["train"])
    texts = {s: set(a.splits[s]["text"]) for s in a.splits}
    assert not texts["train"] & texts["test"] and not texts["validation"] & texts["test"]
    assert len(a.splits["test"]) == 24 and len(a.splits["validation"]) == 24


def test_subsampling_keeps_the_test_split_fixed(tiny_csv):
    full = load_task(TaskSpec(dataset=str(tiny_csv), label_column="sentiment"), 0)
    small = load_task(TaskSpec(dataset=str(tiny_csv), label_column="sentiment", max_train_samples=20), 0)
    assert len(small.splits["train"]) == 20
    pd.testing.assert_frame_equal(full.splits["test"], small.splits["test"])


def test_pair_task_and_column_mapping(tmp_path):
    df = pd.DataFrame(
        {"s1": ["a b", "c d", "e f", "g h"] * 10, "s2": ["x", "y", "z", "w"] * 10, "y": [0, 1, 1, 0] * 10}
    )
    path = tmp_path / "pairs.jsonl"
    df.to_json(path, orient="records", lines=True)
    task = load_task(TaskSpec(dataset=str(path), text_column="s1", text_pair_column="s2", label_column="y"), 0)
    assert task.is_pair and task.labels == ["0", "1"] and "text_pair" in task.splits["train"]


def test_folder_with_own_splits(tmp_path):
    make_rows(60).to_csv(tmp_path / "train.csv", index=False)
    make_rows(30, seed=1).to_csv(tmp_path / "test.csv", index=False)
    task = load_task(TaskSpec(dataset=str(tmp_path), label_column="sentiment"), 0)
    assert len(task.splits["test"]) == 30 and len(task.splits["train"]) + len(task.splits["validation"]) == 60


@pytest.mark.parametrize("name", ["validation", "valid", "dev"])
def test_folder_validation_file_by_its_common_names(tmp_path, name):
    """CoNLL-2003 ships valid.txt and many folders dev.*: each is the validation split, not ignored."""
    make_rows(60).to_csv(tmp_path / "train.csv", index=False)
    make_rows(20, seed=2).to_csv(tmp_path / f"{name}.csv", index=False)
    make_rows(30, seed=1).to_csv(tmp_path / "test.csv", index=False)
    task = load_task(TaskSpec(dataset=str(tmp_path), label_column="sentiment"), 0)
    assert [len(task.splits[s]) for s in ("train", "validation", "test")] == [60, 20, 30]


def test_missing_column_names_columns_and_fix(tiny_csv):
    with pytest.raises(
        CompressError,
        match=r"has no column 'label'; columns are \['text', 'sentiment', 'confidence'\] - set task\.text_column",
    ):
        load_task(TaskSpec(dataset=str(tiny_csv)), 0)


def test_unseen_labels(tiny_csv):
    with pytest.raises(CompressError, match=r"values not in task.labels \['negative', 'positive'\]: \['neutral'\]"):
        load_task(TaskSpec(dataset=str(tiny_csv), label_column="sentiment", labels=["negative", "positive"]), 0)


def test_filters_and_empty_after_filtering(tiny_csv):
    kept = load_task(
        TaskSpec(
            dataset=str(tiny_csv),
            label_column="sentiment",
            filters=[{"column": "confidence", "op": ">=", "value": 0.5}],
        ),
        0,
    )
    assert sum(len(df) for df in kept.splits.values()) < 240
    with pytest.raises(CompressError, match="no training rows left after filters"):
        load_task(
            TaskSpec(
                dataset=str(tiny_csv),
                label_column="sentiment",
                filters=[{"column": "confidence", "op": ">", "value": 2}],
            ),
            0,
        )


def test_missing_file_and_bad_type(tmp_path):
    with pytest.raises(CompressError, match="no such file or folder"):
        load_task(TaskSpec(dataset=str(tmp_path / "nope.csv")), 0)
    bad = tmp_path / "data.txt"
    bad.write_text("x")
    with pytest.raises(CompressError, match="read as CoNLL columns"):
        load_task(TaskSpec(dataset=str(bad)), 0)


def test_hub_dataset_offline_is_one_clear_error():
    t0 = time.time()
    with pytest.raises(CompressError, match=r"could not load Hugging Face dataset 'glue' \(config 'sst2'\).*offline\?"):
        load_task(TaskSpec(dataset="glue", config="sst2"), 0)
    assert time.time() - t0 < 60
