"""`compress report`: what a study found, against what a user gets without compress.

reports/<name>/index.html   interactive chart (plotly, embedded: works offline) and tables
reports/<name>/report.md    the same for git, with pareto.png and predictor.png
reports/<name>/trials.csv   every proxy trial, final student, baseline and teacher form (pandas)
reports/<name>/summary.json the numbers (`ReportSummary`): baselines, final students, predictor quality
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from compress.core.atomic import atomic_dir
from compress.core.errors import CompressError
from compress.report.frontier import pareto
from compress.report.plots import render_png, render_predictor_png
from compress.report.points import load_points
from compress.report.render import Page, render_html, render_markdown
from compress.report.summary import summarize


def build(sources: list[Path], out: Path, storage: str | None = None) -> Path:
    """Write the report for `sources` into `out` (replaced whole, only when everything was written).
    `storage` replaces the URL recorded in a study's search.json (one recorded without its password)."""
    loaded = [load_points(Path(s), storage) for s in sources]
    points = pd.concat([df for df, _ in loaded], ignore_index=True)
    if not _scored(points):
        raise CompressError(
            f"{', '.join(map(str, sources))}: no finished trial to report yet; run compress search (or --resume) first"
        )
    front = pareto(points[points["kind"].isin(["trial", "student"])])
    summary, picks = summarize(points, front, loaded[0][1], {c.source.name: c.teacher for _, c in loaded})
    with atomic_dir(out) as tmp:
        points.to_csv(tmp / "trials.csv", index=False)
        render_png(points, front, summary, tmp / "pareto.png")
        page = Page(
            out.name, points, front, summary, picks, render_predictor_png(points, summary, tmp / "predictor.png")
        )
        (tmp / "report.md").write_text(render_markdown(page))
        (tmp / "index.html").write_text(render_html(page))
        (tmp / "summary.json").write_text(summary.model_dump_json(indent=2))
    return out


def _scored(points: pd.DataFrame) -> bool:
    """Whether any student (not a teacher form) finished with a validation score."""
    if "val_score" not in points:
        return False
    return bool(((points["state"] == "COMPLETE") & points["val_score"].notna() & (points["kind"] != "teacher")).any())
