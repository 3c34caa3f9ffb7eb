"""The report's pages: Markdown (for git) and an offline HTML page (plotly embedded), from the report's frame."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from compress.search.plots import plotly_div

FINAL_COLUMNS = [
    "model",
    "form",
    "test acc [95% CI]",
    "ms p10 (median)",
    "x teacher's fastest",
    "ms natural (x)",
    "x teacher PyTorch fp32",
    "layers",
    "groups",
    "FFN",
]
PAIRED_COLUMNS = ["rival", "form", "x teacher's fastest", "test acc", "best final student at least as fast", "difference [paired 95% CI]", "verdict"]
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
    "groups",
    "FFN",
]


def metric_of(summary: dict[str, Any]) -> str:
    """The task's primary metric, which every score column holds (accuracy unless task.metric says otherwise)."""
    return str(summary.get("metric") or "accuracy")


def columns(names: list[str], summary: dict[str, Any]) -> list[str]:
    return [c.replace(" acc", f" {metric_of(summary)}") for c in names]


def fmt_ci(row: Any) -> str:
    """Test accuracy with its interval, for a row (Series or itertuples record)."""
    acc, lo, hi = (getattr(row, k, None) for k in ("test_score", "test_ci_low", "test_ci_high"))
    if acc is None or pd.isna(acc):
        return "-"
    return f"{acc:.4f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and not pd.isna(lo) else "")


def _num(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None or pd.isna(value) else f"{value:{spec}}{suffix}"


def escape(text: Any) -> str:
    return html.escape(str(text))


def final_rows(points: pd.DataFrame) -> list[list[str]]:
    """Final students, then baselines, then the teacher's forms: the table a user decides from."""
    rows = []
    order = {"final": 0, "student": 0, "baseline": 1, "teacher": 2}
    ranked = (
        points[points["kind"].isin(list(order))].assign(_o=lambda d: d["kind"].map(order)).sort_values(["_o", "speedup"], ascending=[True, False])
    )
    for r in ranked.itertuples():
        natural = f"{_num(getattr(r, 'natural_ms', None))} ({_num(getattr(r, 'natural_speedup', None), suffix='x')})"
        rows.append(
            [
                str(r.name) + (f" (challenger of {c})" if isinstance(c := getattr(r, "challenges", None), str) else ""),
                str(r.form),
                fmt_ci(r),
                f"{_num(r.latency_ms)} ({_num(r.median_ms)})",
                _num(r.speedup, suffix="x"),
                natural,
                _num(getattr(r, "speedup_vs_torch", None), suffix="x"),
                _num(getattr(r, "layers", None), ".0f"),
                str(getattr(r, "groups", "") or "-"),
                _num(getattr(r, "intermediate_size", None), ".0f"),
            ]
        )
    return rows


def paired_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Each rival against the most accurate final student at least as fast, on the same test units."""
    return [
        [str(b["name"]), str(b["form"]), _num(b.get("speedup"), suffix="x"), _num(b.get("test_score"), ".4f"), *_paired(b.get("paired"))]
        for b in summary["baselines"]
    ]


def _paired(c: dict[str, Any] | None) -> list[str]:
    """Student, difference [interval] and verdict of one paired comparison (report.closest)."""
    if c is None:
        return ["-", "-", "no final student as fast"]
    lo, hi = c["ci95"]
    verdict = "more accurate" if lo > 0 else "less accurate" if hi < 0 else "as accurate within noise"
    return [str(c["student"]), f"{c['diff']:+.4f} [{lo:+.3f}, {hi:+.3f}]", verdict]


PAIRED_NOTE = (
    "Both models scored on the same bootstrap draws of the test set: they share most errors, so this interval of the difference is "
    "far narrower than either model's own, and a gap inside it is noise."
)


def proxy_rows(front: pd.DataFrame) -> list[list[str]]:
    return [
        [
            str(r.name),
            _num(r.val_score, ".4f"),
            fmt_ci(r),
            _num(getattr(r, "predicted_ms", None)),
            _num(r.speedup, suffix="x"),
            _num(getattr(r, "latency_ms", None)),
            _num(getattr(r, "measured_speedup", None), suffix="x"),
            _num(getattr(r, "retimed_speedup", None), suffix="x"),
            _num(getattr(r, "layers", None), ".0f"),
            str(getattr(r, "groups", "") or "-"),
            _num(getattr(r, "intermediate_size", None), ".0f"),
        ]
        for r in front.itertuples()
    ]


def _headline(summary: dict[str, Any]) -> list[str]:
    best = summary["best_speedup_vs_teacher_fastest_within_1pt"]
    timing = summary["timing"]
    how = (
        (
            f"timed together in one run ({timing['repeats']} repeats x {timing['runs']} calls, seq {timing['seq']}, {timing['threads']} threads, "
            "p10 of per-call times)"
        )
        if timing
        else "timed in the study's reference run (run `compress finalize` to time the final students with it)"
    )
    lines = [
        f"Deploy target: **{summary['target']}**. Every speed-up is against the teacher's fastest deploy form, **{summary['reference']}**, {how}."
    ]
    if str(summary["target"]).startswith("executorch"):
        lines.append(
            "These ExecuTorch milliseconds ran XNNPACK's x86 kernels on this machine, not a phone's ARM ones: they rank the students "
            "here; measure the `.pte` files on the phone before quoting phone latency."
        )
    if summary["finals"]:
        lines.append(
            f"Fastest final student within 1 pt of the teacher's test {metric_of(summary)}: **{_num(best, suffix='x') if best else 'none'}**. "
            f"Baselines (teacher forms and peers) matched or beaten on both axes by a final student: "
            f"**{summary['baselines_dominated']} of {summary['baselines_total']}**; as fast and as accurate within noise (paired 95% "
            f"interval of the {metric_of(summary)} difference): **{summary['baselines_matched_paired']} of {summary['baselines_total']}**."
        )
    p = summary["predictor"]
    if p["spearman"] is not None:
        own = p["own_runs"]
        where = (
            "re-timed together after the search, beside the teacher's forms, repeated like the final students"
            if p["measured"] == "re-timed"
            else "each measured once in its own run"
        )
        also = (
            f" (each trial's single timing series in its own run: {own['spearman']:.3f}, {100 * own['median_abs_err']:.1f}%)"
            if p["measured"] == "re-timed" and own["spearman"] is not None
            else ""
        )
        lines.append(
            f"Latency model, predicted vs measured speed-up over {p['trials']} proxy trials {where}: rank correlation {p['spearman']:.3f}, "
            f"median |error| {100 * p['median_abs_err']:.1f}%{also}."
        )
    return lines


def _knee(summary: dict[str, Any]) -> str:
    r, k = summary["_knee_row"], summary["knee"]
    if r is None:
        return "No recommendation among the proxy trials: no feasible finished trial."
    return (
        f"Knee of the proxy front: {r['name']} (groups {r.get('groups')}, {_num(r.get('layers'), '.0f')} layers): predicted {_num(r['speedup'])}x at "
        f"test {metric_of(summary)} {fmt_ci(r)} - {k['why']}."
    )


def _budgets(summary: dict[str, Any]) -> list[str]:
    out = []
    for b in summary["_budget_rows"]:
        r = b["row"]
        out.append(
            f"- at least {b['speedup_at_least']}x (predicted): "
            + ("no feasible student" if r is None else f"{r['name']}, {r['speedup']:.2f}x, test {fmt_ci(r)}")
        )
    return out


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *("| " + " | ".join(r) + " |" for r in rows)]


def render_markdown(points: pd.DataFrame, front: pd.DataFrame, summary: dict[str, Any], name: str) -> str:
    counts = ", ".join(f"{v} {k.lower()}" for k, v in summary["trials"].items())
    lines = [
        f"# Report: {name}",
        "",
        *_headline(summary),
        "",
        f"![{metric_of(summary)} vs speed-up](pareto.png)",
        "",
        "## Final students vs what you get without compress",
        "",
        *_table(columns(FINAL_COLUMNS, summary), final_rows(points)),
        "",
        "Final students: the distinct front architectures retrained at full budget, and per baseline its challenger (the largest of the "
        "best proxies predicted faster than it); baselines trained with the same budget. "
        "`ms natural`: batch 1 over validation texts at their own lengths (mean), with its speed-up per text.",
        "",
        "### Each rival against the final students (paired test comparison)",
        "",
        *_table(columns(PAIRED_COLUMNS, summary), paired_rows(summary)),
        "",
        PAIRED_NOTE,
        "",
        f"## Search: proxy trials ({counts})",
        "",
        _knee(summary),
        "",
        *_table(columns(PROXY_COLUMNS, summary), proxy_rows(front)),
        "",
        f"Proxy trials train briefly; the front is chosen on validation {metric_of(summary)} and predicted latency (the search's objectives). "
        "`measured x`: one timing series in the trial's own run; `re-timed x`: re-timed after the search beside the teacher's "
        "forms, repeated (the latency model's check).",
        *(["", "![latency model: predicted vs measured speed-up](predictor.png)"] if summary.get("_predictor_png") else []),
        "",
        "### Best proxy student per speed level",
        "",
        *_budgets(summary),
        "",
        f"Hypervolume of the proxy front (validation {metric_of(summary)} x predicted latency relative to the teacher's fastest form; "
        "reference point: "
        f"teacher - 10 pt at 1x): {summary['hypervolume']:.4f}.",
        "",
        "Every point with every metric: [trials.csv](trials.csv); interactive view: [index.html](index.html).",
        "",
    ]
    return "\n".join(lines)


def _hover(rows: pd.DataFrame) -> list[str]:
    out = []
    for r in rows.itertuples():
        measured = f"<br>measured {_num(getattr(r, 'latency_ms', None))} ms p10" if getattr(r, "latency_ms", None) is not None else ""
        layers, ffn = _num(getattr(r, "layers", None), ".0f"), _num(getattr(r, "intermediate_size", None), ".0f")
        arch = f"groups {escape(getattr(r, 'groups', '-'))}, layers {layers}, FFN {ffn}"
        out.append(
            f"{escape(r.name)} {escape(r.form)}<br>test {fmt_ci(r)}, val {_num(r.val_score, '.4f')}<br>{_num(r.speedup)}x the teacher's "
            f"fastest form{measured}<br>{arch}<br>{escape(getattr(r, 'config', '') or '')}"
        )
    return out


def _html_table(table_id: str, columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_html(points: pd.DataFrame, front: pd.DataFrame, summary: dict[str, Any], name: str, floor: float | None = None) -> str:
    plot = plotly_div(points, front, summary, _hover)
    headline = "".join(f"<p>{escape(line.replace('**', ''))}</p>" for line in _headline(summary))
    budgets = "".join(f"<li>{escape(line[2:])}</li>" for line in _budgets(summary))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>compress report: {escape(name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1250px;color:#222}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}}th{{background:#f3f3f3}}.note{{color:#555;font-size:13px}}</style></head>
<body><h1>compress report: {escape(name)}</h1>
{headline}
{plot}
<h2>Final students vs what you get without compress</h2>
{_html_table("finals", columns(FINAL_COLUMNS, summary), final_rows(points))}
<p class="note">Final students: the distinct front architectures retrained at full budget, and per baseline its challenger (the largest
of the best proxies predicted faster than it); baselines trained with the same budget.</p>
<h3>Each rival against the final students (paired test comparison)</h3>
{_html_table("paired", columns(PAIRED_COLUMNS, summary), paired_rows(summary))}
<p class="note">{escape(PAIRED_NOTE)}</p>
<h2>Search: proxy front ({len(front)} students)</h2>
<p>{escape(_knee(summary))}</p>
{_html_table("pareto", columns(PROXY_COLUMNS, summary), proxy_rows(front))}
{'<img src="predictor.png" alt="latency model: predicted vs measured speed-up" width="500">' if summary.get("_predictor_png") else ""}
<h2>Best proxy student per speed level</h2><ul>{budgets}</ul>
<p>Hypervolume: {summary["hypervolume"]:.4f}. Trials: {escape(summary["trials"])}. All points: <a href="trials.csv">trials.csv</a>.</p>
</body></html>
"""
