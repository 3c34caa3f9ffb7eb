"""Rendering of `compress report`: the PNG (matplotlib), the Markdown page and the offline HTML page (plotly)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

from compress.core.records import TeacherReference

COLUMNS = [
    "trial",
    "form",
    "test acc [95% CI]",
    "val acc",
    "latency ms (p90)",
    "x teacher",
    "params M",
    "GFLOPs",
    "size MB",
    "layers",
    "FFN",
    "groups",
]


def fmt_ci(row: Any) -> str:
    """Test accuracy with its interval, for a row (Series or itertuples record)."""
    acc, lo, hi = (getattr(row, k, None) for k in ("test_accuracy", "test_ci_low", "test_ci_high"))
    if acc is None or pd.isna(acc):
        return "-"
    return f"{acc:.4f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and not pd.isna(lo) else "")


def escape(text: Any) -> str:
    return html.escape(str(text))


def table_rows(front: pd.DataFrame) -> list[list[str]]:
    rows = []
    for _, r in front.iterrows():
        rows.append(
            [
                f"{r.source}#{int(r.trial)}",
                str(r.form),
                fmt_ci(r),
                f"{r.val_accuracy:.4f}",
                f"{r.latency_ms:.2f} ({r.latency_p90_ms:.2f})",
                f"{r.speedup_vs_teacher:.2f}",
                f"{r.params_m:.1f}",
                f"{r.gflops:.2f}",
                "-" if pd.isna(r.size_mb) else f"{r.size_mb:.1f}",
                "-" if pd.isna(r.layers) else str(int(r.layers)),
                "-" if pd.isna(r.intermediate_size) else str(int(r.intermediate_size)),
                str(r.groups or "-"),
            ]
        )
    return rows


def _teacher_line(teacher: TeacherReference) -> str:
    t = teacher.test
    test = f"test accuracy {t['accuracy']:.4f} [{t.ci95['accuracy'][0]:.3f}, {t.ci95['accuracy'][1]:.3f}], " if t else ""
    onnx = teacher.latency.get("teacher.onnx")
    onnx_text = f", ONNX Runtime fp32 {onnx.median_ms:.2f} ms" if onnx else ""
    return f"Teacher: {test}validation {teacher.validation['accuracy']:.4f}; latency {teacher.latency_ms:.2f} ms (torch fp32 eager{onnx_text})."


def _budget_lines(summary: dict) -> list[str]:
    out = []
    for b in summary["_budget_rows"]:
        r = b["row"]
        ms = TeacherReference.model_validate(summary["teacher"]).latency_ms / b["speedup_at_least"]
        out.append(
            f"- at least {b['speedup_at_least']}x faster than the teacher (about {ms:.1f} ms or less): "
            + (
                "no feasible student"
                if r is None
                else f"{r.source}#{int(r.trial)} ({r.form}), {r.speedup_vs_teacher:.2f}x, test accuracy {fmt_ci(r)}"
            )
        )
    return out


def _knee_line(summary: dict) -> str:
    r, k = summary["_knee_row"], summary["knee"]
    if r is None:
        return "No recommendation: no feasible finished trial."
    return (
        f"**Recommended: {r.source}#{int(r.trial)}** ({r.form}; groups {r.groups}, {int(r.layers)} layers): {r.speedup_vs_teacher:.2f}x "
        f"faster than the teacher at test accuracy {fmt_ci(r)} - {k['why']}. Folder: `{r.path}`."
    )


def render_markdown(points: pd.DataFrame, front: pd.DataFrame, teacher: TeacherReference, summary: dict, name: str) -> str:
    counts = ", ".join(f"{v} {k.lower()}" for k, v in summary["trials"].items())
    lines = [
        f"# Report: {name}",
        "",
        f"Sources: {', '.join(sorted(points['source'].unique()))}. Trials: {counts}.",
        "",
        _teacher_line(teacher),
        "",
        "![accuracy vs latency](pareto.png)",
        "",
        _knee_line(summary),
        "",
        f"## Pareto front ({len(front)} students; chosen on validation accuracy, reported with test accuracy)",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(front)]
    hv = ", ".join(f"{s}: {v:.4f}" for s, v in summary["hypervolume_by_source"].items())
    best = summary["best_speedup_within_1pt_test"]
    lines += [
        "",
        "## Best student per speed level",
        "",
        *_budget_lines(summary),
        "",
        "Fastest front student within 1 pt of the teacher's test accuracy: " + (f"**{best:.2f}x**." if best else "none."),
        "",
        f"Hypervolume (validation accuracy x latency relative to the teacher, reference point: teacher - 10 pt at the teacher's "
        f"latency): {summary['hypervolume']:.4f} ({hv}).",
        "",
        "Latency: median of interleaved runs, batch 1, real token ids; `x teacher` is measured against the teacher timed in the "
        "same interleaved run (torch fp32 eager), which keeps trials timed at different moments comparable.",
        "",
        "All trials with every metric: [trials.csv](trials.csv); interactive view: [index.html](index.html).",
        "",
    ]
    return "\n".join(lines)


def render_png(points: pd.DataFrame, front: pd.DataFrame, teacher: TeacherReference, path: Path, floor: float | None = None) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    done = points[(points["state"] == "COMPLETE") & points["val_accuracy"].notna()]
    for source, df in done.groupby("source"):
        ok = df["feasible"].fillna(False).astype(bool)
        ax.scatter(df.loc[ok, "speedup_vs_teacher"], df.loc[ok, "val_accuracy"], s=28, alpha=0.7, label=f"{source}: trials")
        if (~ok).any():
            ax.scatter(df.loc[~ok, "speedup_vs_teacher"], df.loc[~ok, "val_accuracy"], s=28, marker="x", color="grey", label=f"{source}: infeasible")
    if not front.empty:
        f = front.sort_values("speedup_vs_teacher")
        ax.step(f["speedup_vs_teacher"], f["val_accuracy"], where="pre", color="crimson", lw=1.5)
        ax.scatter(f["speedup_vs_teacher"], f["val_accuracy"], s=60, facecolors="none", edgecolors="crimson", lw=1.5, label="Pareto front")
    ax.scatter([1.0], [teacher.validation["accuracy"]], marker="*", s=220, color="gold", edgecolors="black", label="teacher", zorder=5)
    if floor is not None:
        ax.axhline(floor, color="grey", ls="--", lw=1, label=f"accuracy floor (teacher - {teacher.validation['accuracy'] - floor:.2f})")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xlabel("speedup vs the teacher (torch fp32 eager, timed in the same run; log scale)")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("accuracy vs speed: every trial, the Pareto front and the teacher")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_html(points: pd.DataFrame, front: pd.DataFrame, teacher: TeacherReference, summary: dict, name: str, floor: float | None = None) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    done = points[(points["state"] == "COMPLETE") & points["val_accuracy"].notna()]
    hover = lambda df: [
        f"{r.source}#{int(r.trial)} {r.form}<br>val {r.val_accuracy:.4f}, test {fmt_ci(r)}<br>{r.latency_ms:.2f} ms, "
        f"{r.speedup_vs_teacher:.2f}x teacher<br>groups {r.groups}, layers {r.layers}, FFN {r.intermediate_size}<br>{escape(r.config)}"
        for r in df.itertuples()
    ]
    for source, df in done.groupby("source"):
        ok = df["feasible"].fillna(False).astype(bool)
        fig.add_trace(
            go.Scatter(
                x=df.loc[ok, "speedup_vs_teacher"],
                y=df.loc[ok, "val_accuracy"],
                mode="markers",
                name=f"{source}: trials",
                text=hover(df[ok]),
                hoverinfo="text",
                marker={"size": 9, "opacity": 0.75},
            )
        )
        if (~ok).any():
            fig.add_trace(
                go.Scatter(
                    x=df.loc[~ok, "speedup_vs_teacher"],
                    y=df.loc[~ok, "val_accuracy"],
                    mode="markers",
                    name=f"{source}: infeasible",
                    text=hover(df[~ok]),
                    hoverinfo="text",
                    marker={"symbol": "x", "color": "grey", "size": 8},
                )
            )
    if not front.empty:
        f = front.sort_values("speedup_vs_teacher")
        fig.add_trace(
            go.Scatter(
                x=f["speedup_vs_teacher"],
                y=f["val_accuracy"],
                mode="lines+markers",
                name="Pareto front",
                text=hover(f),
                hoverinfo="text",
                line={"shape": "vh", "color": "crimson"},
                marker={"size": 13, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "crimson"}},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[1.0],
            y=[teacher.validation["accuracy"]],
            mode="markers",
            name="teacher",
            marker={"symbol": "star", "size": 18, "color": "gold", "line": {"width": 1, "color": "black"}},
            hoverinfo="text",
            text=[f"teacher<br>{teacher.latency_ms:.2f} ms, val {teacher.validation['accuracy']:.4f}"],
        )
    )
    if floor is not None:
        fig.add_hline(y=floor, line_dash="dash", line_color="grey", annotation_text="accuracy floor (max_accuracy_drop)")
    fig.update_layout(
        xaxis={"type": "log", "title": "speedup vs the teacher (torch fp32 eager, timed in the same run)", "ticksuffix": "x"},
        yaxis={"title": "validation accuracy"},
        template="plotly_white",
        height=520,
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
    )
    plot = fig.to_html(full_html=False, include_plotlyjs=True, div_id="frontier")  # script embedded: no CDN, works offline
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in table_rows(front))
    budgets = "".join(f"<li>{escape(line[2:])}</li>" for line in _budget_lines(summary))
    knee = escape(_knee_line(summary).replace("**", ""))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>compress report: {escape(name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}}th{{background:#f3f3f3}}.note{{color:#555;font-size:13px}}</style></head>
<body><h1>compress report: {escape(name)}</h1>
<p>{escape(_teacher_line(teacher))}</p>
<p><b>{knee}</b></p>
{plot}
<h2>Pareto front ({len(front)} students)</h2>
<p class="note">Chosen on validation accuracy, reported with test accuracy (95% bootstrap interval). Hover a point for its configuration.</p>
<table id="pareto"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Best student per speed level</h2><ul>{budgets}</ul>
<p>Hypervolume: {summary["hypervolume"]:.4f}. Trials: {escape(summary["trials"])}. All metrics: <a href="trials.csv">trials.csv</a>.</p>
</body></html>
"""
