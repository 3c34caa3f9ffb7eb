"""The report's pages: Markdown (for git) and an offline HTML page (plotly embedded), from the report's frame."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from compress.report.plots import plotly_div
from compress.report.summary import Picks, ReportSummary
from compress.report.tables import (
    FINAL_COLUMNS,
    PAIRED_COLUMNS,
    PAIRED_NOTE,
    PROXY_COLUMNS,
    columns,
    escape,
    final_rows,
    fmt_ci,
    num,
    paired_rows,
    proxy_rows,
)


@dataclass(frozen=True)
class Page:
    """Everything a page shows: the points, the proxy front, the numbers, and whether predictor.png was drawn."""

    name: str
    points: pd.DataFrame
    front: pd.DataFrame
    summary: ReportSummary
    picks: Picks
    predictor_png: bool


def _headline(summary: ReportSummary) -> list[str]:
    metric, timing = summary.metric, summary.timing
    how = "timed in the study's reference run (run `compress finalize` to time the final students with it)"
    if timing:
        shape = f"seq {timing.seq}"
        if timing.latency_shape == "natural":  # search.latency_shape: natural
            shape = f"batch 1 over real texts at their own lengths (mean {timing.seq} tokens), per text"
        how = (
            f"timed together in one run ({timing.repeats} repeats x {timing.runs} calls, {shape}, "
            f"{timing.threads} threads, {timing.statistic})"
        )
    lines = [
        f"Deploy target: **{summary.target}**. Every speed-up is against the teacher's fastest deploy form, "
        f"**{summary.reference}**, {how}."
    ]
    if str(summary.target).startswith("executorch"):
        lines.append(
            "These ExecuTorch milliseconds ran XNNPACK's x86 kernels on this machine, not a phone's ARM ones: they "
            "rank "
            "the students here; measure the `.pte` files on the phone before quoting phone latency."
        )
    if summary.finals:
        best = summary.best_speedup_vs_teacher_fastest_within_1pt
        total = summary.baselines_total
        lines.append(
            f"Fastest final student within 1 pt of the teacher's test {metric}: "
            f"**{num(best, suffix='x') if best else 'none'}**. "
            f"Baselines (teacher forms and peers) matched or beaten on both axes by a final student: "
            f"**{summary.baselines_dominated} of {total}**; as fast and as accurate within noise (paired 95% interval "
            f"of the {metric} difference): **{summary.baselines_matched_paired} of {total}**."
        )
    if summary.budget.finals_skipped:
        lines.append(
            f"{summary.budget.finals_skipped} chosen front student(s) not retrained: the finalize budget "
            f"(finalize.timeout {summary.budget.finalize_timeout:g} s) ran out."
        )
    p, own = summary.predictor, summary.predictor.own_runs
    if p.spearman is not None and p.median_abs_err is not None:
        retimed = p.measured == "re-timed"
        where = (
            "re-timed together after the search, beside the teacher's forms, repeated like the final students"
            if retimed
            else "each measured once in its own run"
        )
        also = (
            f" (each trial's single timing series in its own run: {own.spearman:.3f}, {100 * own.median_abs_err:.1f}%)"
            if retimed and own.spearman is not None and own.median_abs_err is not None
            else ""
        )
        lines.append(
            f"Latency model, predicted vs measured speed-up over {p.trials} proxy trials {where}: rank correlation "
            f"{p.spearman:.3f}, median |error| {100 * p.median_abs_err:.1f}%{also}."
        )
    return lines


def _knee(page: Page) -> str:
    r, k = page.picks.knee, page.summary.knee
    if r is None or k is None:
        return "No recommendation among the proxy trials: no feasible finished trial."
    return (
        f"Knee of the proxy front: {r.name} (groups {r.groups}, {num(r.layers, '.0f')} layers): predicted "
        f"{num(r.speedup)}x at test {page.summary.metric} {fmt_ci(r)} - {k.why}."
    )


def _levels(page: Page) -> list[str]:
    out = []
    for level, r in page.picks.levels:
        best = "no feasible student" if r is None else f"{r.name}, {num(r.speedup)}x, test {fmt_ci(r)}"
        out.append(f"- at least {level:g}x (predicted): {best}")
    return out


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


FINALS_NOTE = (
    "Final students: the distinct front architectures retrained at full budget, and per baseline its challenger (the "
    "largest of the best proxies predicted faster than it); baselines trained with the same budget."
)


def render_markdown(page: Page) -> str:
    summary, metric = page.summary, page.summary.metric
    lines = [
        f"# Report: {page.name}",
        "",
        *_headline(summary),
        "",
        f"![{metric} vs speed-up](pareto.png)",
        "",
        "## Final students vs what you get without compress",
        "",
        *_table(columns(FINAL_COLUMNS, summary), final_rows(page.points)),
        "",
        FINALS_NOTE
        + " `ms natural`: batch 1 over validation texts at their own lengths (mean), with its speed-up per text; a"
        " student's fastest form there can be another than at the padded length (then named).",
        "",
        "### Each rival against the final students (paired test comparison)",
        "",
        *_table(columns(PAIRED_COLUMNS, summary), paired_rows(summary)),
        "",
        PAIRED_NOTE,
        "",
        f"## Search: proxy trials ({summary.trial_counts()})",
        "",
        _knee(page),
        "",
        *_table(columns(PROXY_COLUMNS, summary), proxy_rows(page.front)),
        "",
        f"Proxy trials train briefly; the front is chosen on validation {metric} and predicted latency (the search's "
        "objectives). `measured x`: one timing series in the trial's own run; `re-timed x`: re-timed after the search "
        "beside the teacher's forms, repeated (the latency model's check).",
        *(["", "![latency model: predicted vs measured speed-up](predictor.png)"] if page.predictor_png else []),
        "",
        "### Best proxy student per speed level",
        "",
        *_levels(page),
        "",
        f"Hypervolume of the proxy front (validation {metric} x predicted latency relative to the teacher's fastest "
        f"form; reference point: teacher - 10 pt at 1x): {summary.hypervolume:.4f}.",
        "",
        "Every point with every metric: [trials.csv](trials.csv); interactive view: [index.html](index.html).",
        "",
    ]
    return "\n".join(lines)


def _hover(rows: pd.DataFrame) -> list[str]:
    out = []
    for r in rows.itertuples():
        latency = getattr(r, "latency_ms", None)
        measured = f"<br>measured {num(latency)} ms p10" if latency is not None else ""
        layers, ffn = num(getattr(r, "layers", None), ".0f"), num(getattr(r, "intermediate_size", None), ".0f")
        width = num(getattr(r, "hidden", None), ".0f")
        arch = f"groups {escape(getattr(r, 'groups', '-'))}, layers {layers}, width {width}, FFN {ffn}"
        out.append(
            f"{escape(r.name)} {escape(r.form)}<br>test {fmt_ci(r)}, val {num(r.val_score, '.4f')}<br>"
            f"{num(r.speedup)}x the teacher's fastest "
            f"form{measured}<br>{arch}<br>{escape(getattr(r, 'config', '') or '')}"
        )
    return out


def _html_table(table_id: str, columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1250px;color:#222}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
    "th{background:#f3f3f3}.note{color:#555;font-size:13px}"
)


def render_html(page: Page) -> str:
    summary = page.summary
    plot = plotly_div(page.points, page.front, summary, _hover)
    headline = "".join(f"<p>{escape(line.replace('**', ''))}</p>" for line in _headline(summary))
    levels = "".join(f"<li>{escape(line[2:])}</li>" for line in _levels(page))
    predictor = '<img src="predictor.png" alt="latency model: predicted vs measured speed-up" width="500">'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>compress report: {escape(page.name)}</title>
<style>{STYLE}</style></head>
<body><h1>compress report: {escape(page.name)}</h1>
{headline}
{plot}
<h2>Final students vs what you get without compress</h2>
{_html_table("finals", columns(FINAL_COLUMNS, summary), final_rows(page.points))}
<p class="note">{escape(FINALS_NOTE)}</p>
<h3>Each rival against the final students (paired test comparison)</h3>
{_html_table("paired", columns(PAIRED_COLUMNS, summary), paired_rows(summary))}
<p class="note">{escape(PAIRED_NOTE)}</p>
<h2>Search: proxy front ({len(page.front)} students)</h2>
<p>{escape(_knee(page))}</p>
{_html_table("pareto", columns(PROXY_COLUMNS, summary), proxy_rows(page.front))}
{predictor if page.predictor_png else ""}
<h2>Best proxy student per speed level</h2><ul>{levels}</ul>
<p>Hypervolume: {summary.hypervolume:.4f}. Proxy trials: {escape(summary.trial_counts())}.
All points: <a href="trials.csv">trials.csv</a>.</p>
</body></html>
"""
