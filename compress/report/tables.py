"""The report's tables as rows of strings: final students vs rivals, paired comparisons, the proxy front. Markdown
and HTML pages (`compress.report.render`) lay the same rows out.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from compress.finalize.paired import Closest
from compress.report.summary import ReportSummary

FINAL_COLUMNS = [
    "model",
    "form",
    "test acc [95% CI]",
    "ms p10 (median)",
    "x teacher's fastest",
    "ms natural (x)",
    "x teacher PyTorch fp32",
    "layers",
    "width",
    "groups",
    "FFN",
]
PAIRED_COLUMNS = [
    "rival",
    "form",
    "x teacher's fastest",
    "test acc",
    "best final student at least as fast",
    "difference [paired 95% CI]",
    "verdict",
]
PROXY_COLUMNS = [
    "trial",
    "val acc",
    "test acc [95% CI]",
    "predicted ms",
    "predicted x",
    "measured ms p10",
    "measured x",
    "re-timed x",
    "layers",
    "width",
    "groups",
    "FFN",
]


def columns(names: list[str], summary: ReportSummary) -> list[str]:
    """Column titles with the task's primary metric (accuracy unless task.metric says otherwise)."""
    return [c.replace(" acc", f" {summary.metric}") for c in names]


def fmt_ci(row: Any) -> str:
    """Test accuracy with its interval, for a row (Series or itertuples record)."""
    acc, lo, hi = (getattr(row, k, None) for k in ("test_score", "test_ci_low", "test_ci_high"))
    if acc is None or pd.isna(acc):
        return "-"
    return f"{acc:.4f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and not pd.isna(lo) else "")


def num(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None or pd.isna(value) else f"{value:{spec}}{suffix}"


def escape(text: Any) -> str:
    return html.escape(str(text))


def final_rows(points: pd.DataFrame) -> list[list[str]]:
    """Final students, then baselines, then the teacher's forms: the table a user decides from."""
    rows = []
    order = {"final": 0, "student": 0, "baseline": 1, "teacher": 2}
    shown = points[points["kind"].isin(list(order))].assign(_o=lambda d: d["kind"].map(order))
    ranked = shown.sort_values(["_o", "speedup"], ascending=[True, False])
    for r in ranked.itertuples():
        natural = f"{num(getattr(r, 'natural_ms', None))} ({num(getattr(r, 'natural_speedup', None), suffix='x')})"
        if isinstance(other := getattr(r, "natural_form", None), str) and other != r.form:
            natural += f" in {other}"  # another form of the model is the fastest at natural lengths
        rows.append(
            [
                str(r.name) + (f" (challenger of {c})" if isinstance(c := getattr(r, "challenges", None), str) else ""),
                str(r.form),
                fmt_ci(r),
                f"{num(r.latency_ms)} ({num(r.median_ms)})",
                num(r.speedup, suffix="x"),
                natural,
                num(getattr(r, "speedup_vs_torch", None), suffix="x"),
                num(getattr(r, "layers", None), ".0f"),
                num(getattr(r, "hidden", None), ".0f"),
                str(getattr(r, "groups", "") or "-"),
                num(getattr(r, "intermediate_size", None), ".0f"),
            ]
        )
    return rows


def paired_rows(summary: ReportSummary) -> list[list[str]]:
    """Each rival against the most accurate final student at least as fast, on the same test units."""
    return [
        [b.name, str(b.form), num(b.speedup, suffix="x"), num(b.test_score, ".4f"), *_paired(b.paired)]
        for b in summary.baselines
    ]


def _paired(c: Closest | None) -> list[str]:
    """Student, difference [interval] and verdict of one paired comparison (finalize.paired.closest)."""
    if c is None:
        return ["-", "-", "no final student as fast"]
    lo, hi = c.ci95
    verdict = "more accurate" if lo > 0 else "less accurate" if hi < 0 else "as accurate within noise"
    return [c.student, f"{c.diff:+.4f} [{lo:+.3f}, {hi:+.3f}]", verdict]


PAIRED_NOTE = (
    "Both models scored on the same bootstrap draws of the test set: they share most errors, so this interval of the "
    "difference is far narrower than either model's own, and a gap inside it is noise."
)


def proxy_rows(front: pd.DataFrame) -> list[list[str]]:
    return [
        [
            str(r.name),
            num(r.val_score, ".4f"),
            fmt_ci(r),
            num(getattr(r, "predicted_ms", None)),
            num(r.speedup, suffix="x"),
            num(getattr(r, "latency_ms", None)),
            num(getattr(r, "measured_speedup", None), suffix="x"),
            num(getattr(r, "retimed_speedup", None), suffix="x"),
            num(getattr(r, "layers", None), ".0f"),
            num(getattr(r, "hidden", None), ".0f"),
            str(getattr(r, "groups", "") or "-"),
            num(getattr(r, "intermediate_size", None), ".0f"),
        ]
        for r in front.itertuples()
    ]
