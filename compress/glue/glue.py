"""`compress glue GLUE_DIR`: one recipe template over the standard GLUE folders, and a paper-style table.

The layout is the one GLUE's download script writes: `CoLA/`, `SST-2/`, `MRPC/`, `STS-B/`, `QQP/`, `MNLI/`,
`QNLI/`, `RTE/`, each with `train.tsv` and `dev.tsv` (MNLI: `dev_matched.tsv`, `dev_mismatched.tsv`). GLUE's
test labels are hidden, so `dev` is the test split and validation is carved from train (`task.validation_fraction`),
so that model selection never sees the data the table reports. MNLI mismatched is a second run that differs
only in its test file: the same seed and data give the same teacher (cached) and student.

Each task's metric is GLUE's convention (CoLA mcc, MRPC/QQP f1, STS-B pearson, the rest accuracy); the table
shows the teacher (PyTorch fp32), the student's fastest timed form, and its speed-up against the teacher's
fastest deploy form in the same run. The GLUE score is the mean of the tasks' metrics, x100.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from compress.core.atomic import atomic_dir
from compress.core.errors import CompressError
from compress.core.records import ONE_POINT, FormEval, RunMetrics
from compress.pipeline.runner import run_recipe
from compress.recipe import Recipe, parse_recipe

log = logging.getLogger(__name__)
TEMPLATE = Path(__file__).with_name("template.yaml")  # shipped in the package: `compress glue` works from any folder


@dataclass(frozen=True)
class GlueTask:
    folder: str
    text: str | int  # column name, or position in a file without a header (CoLA)
    pair: str | int | None
    label: str | int
    kind: str = "classification"
    metric: str = "accuracy"
    header: bool = True
    dev: str = "dev.tsv"


TASKS = {
    "CoLA": GlueTask("CoLA", 3, None, 1, metric="mcc", header=False),
    "SST-2": GlueTask("SST-2", "sentence", None, "label"),
    "MRPC": GlueTask("MRPC", "#1 String", "#2 String", "Quality", metric="f1"),
    "STS-B": GlueTask("STS-B", "sentence1", "sentence2", "score", kind="regression", metric="pearson"),
    "QQP": GlueTask("QQP", "question1", "question2", "is_duplicate", metric="f1"),
    "MNLI-m": GlueTask("MNLI", "sentence1", "sentence2", "gold_label", dev="dev_matched.tsv"),
    "MNLI-mm": GlueTask("MNLI", "sentence1", "sentence2", "gold_label", dev="dev_mismatched.tsv"),
    "QNLI": GlueTask("QNLI", "question", "sentence", "label"),
    "RTE": GlueTask("RTE", "sentence1", "sentence2", "label"),
}


def read_tsv(path: Path, task: GlueTask) -> pd.DataFrame:
    """One GLUE file as columns text[, text_pair], label. GLUE's TSVs hold unescaped quotes (QUOTE_NONE) and a few
    malformed rows in QQP/MNLI, which are skipped and counted."""
    try:
        df = pd.read_csv(
            path,
            sep="\t",
            quoting=csv.QUOTE_NONE,
            header=0 if task.header else None,
            dtype=str,
            keep_default_na=False,
            on_bad_lines="skip",
            encoding="utf-8-sig",  # some copies of MRPC start with a byte-order mark before "Quality"
        )
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise CompressError(f"{path}: cannot be read as a GLUE TSV ({e}); check the file") from e
    cols = {"text": task.text, "label": task.label} | ({"text_pair": task.pair} if task.pair is not None else {})
    missing = [c for c in cols.values() if c not in df.columns]
    if missing:
        raise CompressError(
            f"{path}: no column {missing[0]!r} (columns {list(df.columns)[:8]}); is this GLUE's {task.folder} file?"
        )
    out = pd.DataFrame({k: df[v] for k, v in cols.items()})
    return out[(out["label"].str.strip() != "") & (out["text"].str.strip() != "")].reset_index(drop=True)


def prepare(glue_dir: Path, name: str, task: GlueTask, data_dir: Path) -> Path | None:
    """The task's train and test files in compress's column names, under data_dir/<name>; None when GLUE_DIR lacks
    them."""
    src = glue_dir / task.folder
    train, dev = src / "train.tsv", src / task.dev
    if not src.is_dir():
        log.warning("GLUE %s: no folder %s; skipped", name, src)
        return None
    if not train.is_file() or not dev.is_file():
        log.warning("GLUE %s: %s needs %s and %s; skipped", name, src, train.name, dev.name)
        return None
    with atomic_dir(data_dir / name) as tmp:
        read_tsv(train, task).to_csv(tmp / "train.csv", index=False)
        read_tsv(dev, task).to_csv(tmp / "test.csv", index=False)
    return data_dir / name


def task_recipe(template: Recipe, name: str, task: GlueTask, data: Path) -> dict[str, Any]:
    """The template with its task section pointed at one GLUE task; limits and lengths of the template are kept."""
    raw = template.raw(name=f"{template.name}-{name}")
    keep = {k: v for k, v in raw["task"].items() if k.startswith("max_") or k == "validation_fraction"}
    pair = {"text_pair_column": "text_pair"} if task.pair is not None else {}
    raw["task"] = (
        keep
        | {
            "dataset": str(data),
            "text_column": "text",
            "label_column": "label",
            "kind": task.kind,
            "metric": task.metric,
        }
        | pair
    )
    return raw


def row(name: str, metric: str, metrics: RunMetrics) -> dict[str, Any]:
    """One line of the table: the teacher's test metric and the fastest timed student form within one point of it
    (none within a point: the most accurate), with every timed student form beside it (`ladder`)."""
    teacher = metrics.evaluations.get("teacher")
    students = [f for f in metrics.evaluations.values() if f.model != "teacher" and f.latency and "test" in f.splits]
    if teacher is None or "test" not in teacher.splits or not students:
        raise CompressError(
            f"GLUE {name}: the template's evaluate pass must score the teacher and a timed student on test "
            "(evaluate.models with teacher and student forms, latency: true)"
        )
    score = lambda f: f.splits["test"][metric]
    best = pick(students, score(teacher), score)
    assert best.latency is not None
    conv = metrics.conversions.get(best.model)
    return {
        "task": name,
        "metric": metric,
        "teacher": score(teacher),
        "student": score(best),
        "student_form": best.form,
        "groups": conv.groups if conv else None,
        "layers": len(conv.teacher_layers) if conv else None,
        "hidden": conv.hidden_size if conv else None,  # residual width (None: recorded before widths were searched)
        "heads": [len(o) for o in conv.head_orders] if conv and conv.head_orders else None,  # per layer, after pruning
        "within_one_point": score(best) >= score(teacher) - ONE_POINT,
        "speedup": best.latency.speedup,
        "reference": best.latency.reference,
        "test_examples": best.splits["test"].n,
        "ladder": [
            {"form": f.form, "score": score(f), "speedup": f.latency.speedup if f.latency else None} for f in students
        ],
    }


def pick(forms: list[FormEval], teacher: float, score) -> FormEval:
    """The fastest form within one point of the teacher; with none that close, the most accurate."""
    close = [f for f in forms if score(f) >= teacher - ONE_POINT]
    if close:
        return max(close, key=lambda f: (f.latency.speedup if f.latency else None) or 0.0)
    return max(forms, key=score)


def run_glue(glue_dir: Path, template: Recipe, source: str, tasks: list[str] | None, out: Path) -> Path:
    """Run the template on every GLUE task found in glue_dir (or `tasks`); write glue.json and glue.md to `out`."""
    if not glue_dir.is_dir():
        raise CompressError(
            f"GLUE folder {glue_dir} does not exist; download GLUE (CoLA/, SST-2/, ...) there or pass its path"
        )
    unknown = sorted(set(tasks or []) - set(TASKS))
    if unknown:
        raise CompressError(f"unknown GLUE task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    rows = []
    data_dir = Path(template.output_dir) / "glue-data"
    for name in tasks or list(TASKS):
        task = TASKS[name]
        if name == "MNLI-mm" and (glue_dir / "MNLI").is_dir() and not (glue_dir / "MNLI" / task.dev).is_file():
            log.warning("GLUE MNLI: no %s; evaluating matched only", task.dev)
            continue
        data = prepare(glue_dir, name, task, data_dir)
        if data is None:
            continue
        log.info("GLUE %s: %s", name, data)
        result = run_recipe(parse_recipe(task_recipe(template, name, task, data), f"{source} ({name})"), source)
        rows.append(row(name, task.metric, result.metrics))
    if not rows:
        raise CompressError(
            f"{glue_dir}: no GLUE task folder found (expected {', '.join(sorted({t.folder for t in TASKS.values()}))})"
        )
    summary = {
        "rows": rows,
        "glue_score": {
            "teacher": 100 * sum(r["teacher"] for r in rows) / len(rows),
            "student": 100 * sum(r["student"] for r in rows) / len(rows),
        },
        "tasks": len(rows),
    }
    with atomic_dir(out) as tmp:
        (tmp / "glue.json").write_text(json.dumps(summary, indent=2))
        (tmp / "glue.md").write_text(markdown(summary))
    return out


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "# GLUE: teacher vs student",
        "",
        "Test = GLUE dev set (validation carved from train). Student: the fastest timed student form within 1 point "
        "of the teacher (* none was: the most accurate). Speed-up against the teacher's fastest deploy form, timed "
        "in the same run.",
        "",
        "| task | metric | teacher | student | student form | layers, width, heads, groups (q,k,v,post,ffn in,out) | "
        "x teacher's fastest |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        x = f"{r['speedup']:.2f}x ({r['reference']})" if r["speedup"] else "-"
        width = f"{r['hidden']}, " if r.get("hidden") else ""
        if heads := r.get("heads"):  # one number when every layer has the same
            width += f"{heads[0] if len(set(heads)) == 1 else '/'.join(map(str, heads))} heads, "
        shape = f"{r['layers']}, {width}{','.join(map(str, r['groups'].values()))}" if r.get("groups") else "-"
        star = "" if r.get("within_one_point", True) else " *"
        lines.append(
            f"| {r['task']} | {r['metric']} | {100 * r['teacher']:.1f} | {100 * r['student']:.1f}{star} | "
            f"{r['student_form']} | {shape} | {x} |"
        )
    g = summary["glue_score"]
    lines += [
        "",
        f"GLUE score (mean of the {summary['tasks']} tasks' metrics, x100): teacher **{g['teacher']:.1f}**, student "
        f"**{g['student']:.1f}**.",
        "",
    ]
    return "\n".join(lines)
