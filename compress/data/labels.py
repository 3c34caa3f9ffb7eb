"""Labels as the models see them: class names -> ids (classification), numbers -> float32 (regression).

Each function rewrites the `label` column of every split in place and says in one line what to fix
when the column does not fit the task's kind.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from compress.core.errors import CompressError


def class_ids(frames: dict[str, pd.DataFrame], label_col: str, label_names: list[str] | None) -> list[str]:
    """Replace class names by ids in every split; the names in id order (task.labels, else sorted)."""
    values = sorted({str(v) for df in frames.values() for v in df["label"]})
    labels = list(label_names) if label_names else values
    unseen = sorted(set(values) - set(labels))
    if unseen:
        raise CompressError(
            f"label column {label_col!r} has values not in task.labels {labels}: {unseen[:5]} - "
            f"add them to task.labels or drop them with task.filters"
        )
    if len(labels) < 2:
        raise CompressError(f"a classification task needs at least 2 labels, found {labels}; check task.label_column")
    numbers = pd.to_numeric(pd.Series(values), errors="coerce")  # NaN where a class name is not a number
    fractional = [v for v, x in zip(values, numbers, strict=True) if x % 1 != 0]
    if not label_names and numbers.notna().all() and fractional:
        raise CompressError(
            f"label column {label_col!r} holds fractional numbers ({', '.join(fractional[:3])}, ...), a score rather "
            "than classes: "
            "set task.kind: regression (or list the classes in task.labels)"
        )
    ids = {name: i for i, name in enumerate(labels)}
    for df in frames.values():
        df["label"] = df["label"].astype(str).map(ids).astype(np.int64)
    return labels


def regression_labels(frames: dict[str, pd.DataFrame], label_col: str) -> list[str]:
    """Make every split's label a float32; the one output is named after the label column."""
    for split, df in frames.items():
        values = pd.to_numeric(df["label"], errors="coerce")
        bad = df["label"][values.isna() | ~np.isfinite(values.fillna(0))]
        if len(bad):
            raise CompressError(
                f"regression label column {label_col!r} ({split}) has values that are not numbers: "
                f"{bad.astype(str).head(3).tolist()} - "
                "fix or filter those rows (task.filters), or use task.kind: classification"
            )
        df["label"] = values.astype(np.float32)
    return [label_col]
