"""The report's charts: accuracy against speed-up over the teacher's fastest deploy form, as PNG and as plotly;
and the latency model's check, predicted against measured speed-up per proxy trial (PNG).

Layers, back to front: proxy trials (grey, at their predicted speed-up), the proxy front, the teacher's
forms (stars), peer baselines (squares), final students (diamonds, measured). x is logarithmic. Named points
(teacher forms, baselines, final students) each get a colour and a legend entry instead of a text label beside
the point: the teacher's forms often sit within a few percent of each other, where labels would overlap.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from compress.core.records import ONE_POINT
from compress.report.summary import ReportSummary

TICKS = (0.1, 0.2, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)
TEXT = "speed-up vs the teacher's fastest deploy form (proxies: predicted; others: measured in one run; log)"
PALETTE = (  # one colour per named point (matplotlib's tab10, then tab20's light shades)
    *("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f"),
    *("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#c7c7c7"),
)


def layers(points: pd.DataFrame, front: pd.DataFrame) -> list[dict[str, Any]]:
    """(label, rows, style) per layer of the chart; `labels` marks layers whose points carry their names."""
    if "speedup" not in points:
        return []
    done = points[(points["state"] == "COMPLETE") & points["test_score"].notna() & points["speedup"].notna()]
    kind = done["kind"]
    trials = done[kind.isin(["trial", "student"])]
    return [
        {
            "label": "proxy trials (predicted)",
            "rows": trials,
            "color": "#b0b0b0",
            "marker": "o",
            "size": 26,
            "labels": False,
        },
        {
            "label": "proxy front",
            "rows": front[front["test_score"].notna()] if "test_score" in front else front,
            "color": "#707070",
            "marker": "o",
            "size": 60,
            "hollow": True,
            "labels": False,
        },
        {
            "label": "teacher forms",
            "rows": done[kind == "teacher"],
            "color": "gold",
            "marker": "*",
            "size": 220,
            "labels": True,
        },
        {
            "label": "baselines",
            "rows": done[kind == "baseline"],
            "color": "#1f77b4",
            "marker": "s",
            "size": 70,
            "labels": True,
        },
        {
            "label": "final students (measured)",
            "rows": done[kind == "final"],
            "color": "crimson",
            "marker": "D",
            "size": 70,
            "labels": True,
        },
    ]


def within_line(summary: ReportSummary) -> float | None:
    test = summary.teacher_score.get("test")
    return None if test is None else test - ONE_POINT


def named(points: pd.DataFrame, front: pd.DataFrame) -> Iterator[tuple[dict[str, Any], Any, str]]:
    """(layer, row, colour) for each named point, each with a colour of its own."""
    colours = iter(PALETTE * 4)
    for layer in layers(points, front):
        if layer["labels"]:
            for r in layer["rows"].itertuples():
                yield layer, r, next(colours)


def render_png(points: pd.DataFrame, front: pd.DataFrame, summary: ReportSummary, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=120)
    for layer in layers(points, front):
        rows = layer["rows"]
        if rows.empty or layer["labels"]:
            continue
        ax.scatter(
            rows["speedup"],
            rows["test_score"],
            s=layer["size"],
            marker=layer["marker"],
            facecolors="none" if layer.get("hollow") else layer["color"],
            edgecolors=layer["color"] if layer.get("hollow") else "black",
            linewidths=0.8,
            label=layer["label"],
            zorder=2,
        )
    for layer, r, colour in named(points, front):
        ax.scatter(
            [r.speedup],
            [r.test_score],
            s=layer["size"],
            marker=layer["marker"],
            facecolors=colour,
            edgecolors="black",
            linewidths=0.8,
            label=f"{r.name} ({float(r.speedup):.2f}x)",
            zorder=3,
        )
    line = within_line(summary)
    if line is not None:
        ax.axhline(line, color="grey", ls="--", lw=1, label=f"teacher test {summary.metric} - 1 pt")
    ax.axvline(1.0, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    _speedup_ticks(ax.xaxis, *ax.get_xlim())
    ax.set_xlabel(TEXT, fontsize=8)
    ax.set_ylabel(f"test {summary.metric}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    ax.set_title(f"{summary.metric} vs speed ({summary.target or 'target'}; reference {summary.reference})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_predictor_png(points: pd.DataFrame, summary: ReportSummary, path: Path) -> bool:
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
        ax.scatter(
            rows["speedup"],
            rows[column],
            s=30,
            c=color,
            marker=marker,
            edgecolors="black",
            linewidths=0.5,
            label=label,
            zorder=3,
        )
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
    ax.set_ylabel(f"measured speed-up vs {summary.reference}", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    p = summary.predictor
    if p.spearman is not None and p.median_abs_err is not None:
        quality = f"rank correlation {p.spearman:.3f}, median |error| {100 * p.median_abs_err:.1f}% ({p.measured})"
        ax.set_title(f"latency model: {quality}", fontsize=8)
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


SYMBOLS = {"o": "circle", "*": "star", "s": "square", "D": "diamond"}


def _marker(layer: dict[str, Any], colour: str | None = None) -> dict[str, Any]:
    hollow = layer.get("hollow")
    return {
        "symbol": SYMBOLS[layer["marker"]],
        "size": max(8, layer["size"] ** 0.5 * 1.6),
        "color": "rgba(0,0,0,0)" if hollow else colour or layer["color"],
        "line": {"width": 1.5 if hollow else 0.5, "color": layer["color"] if hollow else "black"},
    }


def plotly_div(points: pd.DataFrame, front: pd.DataFrame, summary: ReportSummary, hover: Any) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for layer in layers(points, front):
        rows = layer["rows"]
        if rows.empty or layer["labels"]:
            continue
        trace = go.Scatter(
            x=rows["speedup"],
            y=rows["test_score"],
            mode="markers",
            name=layer["label"],
            hovertext=hover(rows),
            hoverinfo="text",
            marker=_marker(layer),
        )
        fig.add_trace(trace)
    for layer, r, colour in named(points, front):  # one legend entry each: names never overlap on the chart
        row = pd.DataFrame([r._asdict()]).drop(columns="Index")
        trace = go.Scatter(
            x=[r.speedup],
            y=[r.test_score],
            mode="markers",
            name=f"{r.name} ({float(r.speedup):.2f}x)",
            legendgroup=layer["label"],
            legendgrouptitle_text=layer["label"],
            hovertext=hover(row),
            hoverinfo="text",
            marker=_marker(layer, colour),
        )
        fig.add_trace(trace)
    line = within_line(summary)
    if line is not None:
        fig.add_hline(y=line, line_dash="dash", line_color="grey", annotation_text="teacher - 1 pt (test)")
    shown = [float(x) for layer in layers(points, front) for x in layer["rows"]["speedup"]]
    ticks = [t for t in TICKS if shown and min(shown) / 1.1 <= t <= max(shown) * 1.1]  # round speed-ups, as the PNG
    fig.update_layout(
        xaxis={"type": "log", "title": TEXT, "tickvals": ticks, "ticktext": [f"{t:g}x" for t in ticks]},
        yaxis={"title": f"test {summary.metric}"},
        template="plotly_white",
        height=560,
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
    )
    # script embedded: no CDN, works offline
    return fig.to_html(full_html=False, include_plotlyjs=True, div_id="frontier")
