"""The report's charts: accuracy against speed-up over the teacher's fastest deploy form, as PNG and as plotly;
and the latency model's check, predicted against measured speed-up per proxy trial (PNG).

Layers, back to front: proxy trials (grey, at their predicted speed-up), the proxy front, the teacher's
forms (stars), peer baselines (labelled), final students (crimson, measured). x is logarithmic.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

TICKS = (0.1, 0.2, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)
TEXT = "speed-up vs the teacher's fastest deploy form (proxies: predicted; others: measured in one run; log)"


def layers(points: pd.DataFrame, front: pd.DataFrame) -> list[dict[str, Any]]:
    """(label, rows, style) per layer of the chart; `labels` marks layers whose points carry their names."""
    done = (
        points[(points["state"] == "COMPLETE") & points["test_score"].notna() & points["speedup"].notna()] if "speedup" in points else points.iloc[:0]
    )
    kind = done["kind"]
    trials = done[kind.isin(["trial", "student"])]
    return [
        {"label": "proxy trials (predicted)", "rows": trials, "color": "#b0b0b0", "marker": "o", "size": 26, "labels": False},
        {
            "label": "proxy front",
            "rows": front[front["test_score"].notna()] if "test_score" in front else front,
            "color": "#707070",
            "marker": "o",
            "size": 60,
            "hollow": True,
            "labels": False,
        },
        {"label": "teacher forms", "rows": done[kind == "teacher"], "color": "gold", "marker": "*", "size": 220, "labels": True},
        {"label": "baselines", "rows": done[kind == "baseline"], "color": "#1f77b4", "marker": "s", "size": 70, "labels": True},
        {"label": "final students (measured)", "rows": done[kind == "final"], "color": "crimson", "marker": "D", "size": 70, "labels": True},
    ]


def within_line(summary: dict[str, Any]) -> float | None:
    test = summary["teacher_score"]["test"]
    return None if test is None else test - 0.01


def render_png(points: pd.DataFrame, front: pd.DataFrame, summary: dict[str, Any], path: Path, floor: float | None = None) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    placed: list[tuple[float, float]] = []  # labelled points so far: a label near another one's goes below its point
    for layer in layers(points, front):
        rows = layer["rows"]
        if rows.empty:
            continue
        face = "none" if layer.get("hollow") else layer["color"]
        ax.scatter(
            rows["speedup"],
            rows["test_score"],
            s=layer["size"],
            marker=layer["marker"],
            facecolors=face,
            edgecolors=layer["color"] if layer.get("hollow") else "black",
            linewidths=0.8,
            label=layer["label"],
            zorder=3 if layer["labels"] else 2,
        )
        if layer["labels"]:
            for r in rows.itertuples():
                x, y = float(r.speedup), float(r.test_score)
                near = sum(abs(math.log(x / px)) < 0.3 and abs(y - py) < 0.01 for px, py in placed)
                ax.annotate(str(r.name), (x, y), textcoords="offset points", xytext=(6, 4 - 13 * near), fontsize=7)
                placed.append((x, y))
    line = within_line(summary)
    if line is not None:
        ax.axhline(line, color="grey", ls="--", lw=1, label=f"teacher test {summary.get('metric') or 'accuracy'} - 1 pt")
    ax.axvline(1.0, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    _speedup_ticks(ax.xaxis, *ax.get_xlim())
    ax.set_xlabel(TEXT, fontsize=8)
    ax.set_ylabel(f"test {summary.get('metric') or 'accuracy'}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(
        f"{summary.get('metric') or 'accuracy'} vs speed ({summary.get('target') or 'target'}; reference {summary['reference']})", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_predictor_png(points: pd.DataFrame, summary: dict[str, Any], path: Path) -> bool:
    """Predicted vs measured speed-up of each proxy trial (each in its own run, and re-timed together after the
    search) around the line of perfect prediction; False (no file) when fewer than two trials were measured."""
    trials = points[points["kind"] == "trial"]
    series = [
        (column, label, color, marker)
        for column, label, color, marker in (
            ("measured_speedup", "each in its own run", "#b0b0b0", "o"),
            ("retimed_speedup", "re-timed together", "crimson", "D"),
        )
        if column in trials and trials[column].notna().sum() >= 2
    ]
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=120)
    for column, label, color, marker in series:
        rows = trials[trials[column].notna()]
        ax.scatter(rows["speedup"], rows[column], s=30, c=color, marker=marker, edgecolors="black", linewidths=0.5, label=label, zorder=3)
    values = pd.concat([trials["speedup"], *(trials[c] for c, *_ in series)]).dropna()
    low, high = float(values.min()) / 1.1, float(values.max()) * 1.1
    ax.plot([low, high], [low, high], color="grey", lw=1, ls="--", label="prediction = measurement")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    for axis in (ax.xaxis, ax.yaxis):
        _speedup_ticks(axis, low, high)
    ax.set_xlabel("predicted speed-up (what the search optimized)", fontsize=8)
    ax.set_ylabel(f"measured speed-up vs {summary['reference']}", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    p = summary["predictor"]
    ax.set_title(
        f"latency model: rank correlation {p['spearman']:.3f}, median |error| {100 * p['median_abs_err']:.1f}% ({p['measured']})", fontsize=8
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _speedup_ticks(axis: Any, low: float, high: float) -> None:
    """A few round speed-ups as ticks of a log axis (no 2x10^-1 labels)."""
    import matplotlib.ticker

    axis.set_major_locator(matplotlib.ticker.FixedLocator([t for t in TICKS if low <= t <= high]))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def plotly_div(points: pd.DataFrame, front: pd.DataFrame, summary: dict[str, Any], hover: Any) -> str:
    import plotly.graph_objects as go

    symbols = {"o": "circle", "*": "star", "s": "square", "D": "diamond"}
    fig = go.Figure()
    for layer in layers(points, front):
        rows = layer["rows"]
        if rows.empty:
            continue
        marker = {
            "symbol": symbols[layer["marker"]],
            "size": max(8, layer["size"] ** 0.5 * 1.6),
            "color": "rgba(0,0,0,0)" if layer.get("hollow") else layer["color"],
            "line": {"width": 1.5 if layer.get("hollow") else 0.5, "color": layer["color"] if layer.get("hollow") else "black"},
        }
        fig.add_trace(
            go.Scatter(
                x=rows["speedup"],
                y=rows["test_score"],
                mode="markers+text" if layer["labels"] else "markers",
                name=layer["label"],
                text=[str(n) for n in rows["name"]] if layer["labels"] else None,
                textposition="top right",
                hovertext=hover(rows),
                hoverinfo="text",
                marker=marker,
            )
        )
    line = within_line(summary)
    if line is not None:
        fig.add_hline(y=line, line_dash="dash", line_color="grey", annotation_text="teacher - 1 pt (test)")
    fig.update_layout(
        xaxis={"type": "log", "title": TEXT, "ticksuffix": "x"},
        yaxis={"title": f"test {summary.get('metric') or 'accuracy'}"},
        template="plotly_white",
        height=560,
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
    )
    return fig.to_html(full_html=False, include_plotlyjs=True, div_id="frontier")  # script embedded: no CDN, works offline
