"""Real tasks: GLUE, CoNLL-2003 (and SQuAD v1.1 when present) through `compress glue`'s shipped template.

Each task runs the template's recipe once (one process, one interleaved timing run): the teacher fine-tuned, a
ladder of SqueezeBERT students converted, distilled and quantized, every form scored on the task's test set
(GLUE's dev set; CoNLL-2003's test file) and timed at seq 128, batch 1, 2 threads against the teacher's fastest
deploy form. Per task: the teacher, the fastest student form within one point of it, the best at >= 2x and
>= 3x, and a GLUE score row like the SqueezeBERT paper's. Large training sets are subsampled by the template's
`task.max_train_samples` (stated in the output).

The data is not in the repository (see README, "Real data"): lay it out as

    DATA/glue/<GLUE task folders: SST-2/, STS-B/, MRPC/, ...>     DATA/conll2003/{train,valid,test}.txt
    DATA/squad/{train,validation}.json (optional)

    python bench/real.py --data real-data [--tasks STS-B,MRPC,CoNLL-2003] [--reuse]   # ~20 min a task, 2 cores
    python bench/real.py --template bench/templates/width.yaml --tasks SST-2,MRPC --out results/bench/width.json
    python bench/real.py --tasks STS-B -s name=g4 -s passes.1.options.groups=1,1,1,1,4,4   # override the template
    python bench/real.py --reuse --also lean4 --also deep-ffn   # rows over the shipped ladder and two more runs

`--also NAME` adds the finished runs of another template (results/bench/real/NAME-<task>, same teacher) to each
task's ladder: every form keeps the speed-up it was timed at against the teacher's fastest form in its own run,
and the row is the fastest form within one point over all of them (each form says its run).

Writes results/bench/real.json (or --out) (keys `tasks.<name>.teacher`, `.student`, `.speedup`, `.groups`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from compress.core.records import read_metrics
from compress.glue.glue import TASKS, TEMPLATE, prepare, row, task_recipe
from compress.pipeline.runner import run_recipe
from compress.recipe import Recipe, load_recipe, parse_recipe

from common import ROOT, cpu

OTHER: dict[str, tuple[str, dict[str, Any], str]] = {  # non-GLUE tasks: folder under DATA, the task section, metric
    "CoNLL-2003": ("conll2003", {"kind": "token_classification", "metric": "f1"}, "f1"),
    "SQuAD": ("squad", {"kind": "question_answering", "metric": "f1", "max_length": 256}, "f1"),
}


def recipes(data: Path, template: Recipe, names: list[str], work: Path) -> dict[str, tuple[dict, str]]:
    """Per task found under `data`: the template's recipe pointed at it, and its metric."""
    out: dict[str, tuple[dict, str]] = {}
    for name in names:
        if name in TASKS:
            prepared = prepare(data / "glue", name, TASKS[name], work / "glue-data")
            if prepared is not None:
                out[name] = (task_recipe(template, name, TASKS[name], prepared), TASKS[name].metric)
        elif name in OTHER:
            folder, task, metric = OTHER[name]
            if not (data / folder / "train.json").exists() and not (data / folder / "train.txt").exists():
                print(f"{name}: no {data / folder}/train.*; skipped")
                continue
            raw = template.raw(name=f"{template.name}-{name}")
            keep = {k: v for k, v in raw["task"].items() if k.startswith("max_")}
            raw["task"] = keep | task | {"dataset": str(data / folder)}
            out[name] = (raw, metric)
    return out


def summarize(name: str, metric: str, runs: dict[str, Any]) -> dict[str, Any]:
    """The glue table's row over one or more runs of the task (run name -> metrics) plus the best student at >= 2x
    and >= 3x. Runs whose teachers scored differently are refused: their students were measured against different
    teachers."""
    rows = {run: row(name, metric, m) for run, m in runs.items()}
    if len({round(r["teacher"], 6) for r in rows.values()}) > 1:
        scores = ", ".join(f"{run} {r['teacher']:.4f}" for run, r in rows.items())
        raise SystemExit(f"{name}: the runs' teachers differ ({scores}); --also needs runs with the same teacher")
    close = [run for run, r in rows.items() if r["within_one_point"]]
    best = (
        max(close, key=lambda run: rows[run]["speedup"]) if close else max(rows, key=lambda run: rows[run]["student"])
    )  # each run's row is its own pick by the same rule, so this is the pick over every run's forms
    ladder = [f | {"run": run} for run, r in rows.items() for f in r["ladder"]]
    r = rows[best] | {"run": best, "ladder": ladder}
    for x in (2, 3):
        fast = [f for f in r["ladder"] if (f["speedup"] or 0) >= x]
        r[f"best_at_{x}x"] = max(fast, key=lambda f: f["score"]) if fast else None
    return r


def complete(path: Path) -> Any:
    """The metrics at `path` if that run completed, else None."""
    if not path.is_file():
        return None
    metrics = read_metrics(path)
    return metrics if metrics.status == "complete" else None


def finished(work: Path, names: list[str], task: str) -> dict[str, Any]:
    """The complete runs of templates `names` on `task` (never run here: --also only reads)."""
    out = {}
    for name in names:
        path = work / f"{name}-{task}" / "metrics.json"
        if (metrics := complete(path)) is not None:
            out[name] = metrics
        else:
            print(f"{task}: no finished run {path.parent.name} (--also {name}); left out")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "real-data", help="folder with glue/, conll2003/, squad/")
    ap.add_argument("--tasks", default="SST-2,STS-B,MRPC,RTE,CoLA,QNLI,QQP,MNLI-m,CoNLL-2003,SQuAD")
    ap.add_argument("--template", type=Path, default=TEMPLATE, help="recipe template (default: compress glue's)")
    ap.add_argument("--reuse", action="store_true", help="summarize finished runs instead of running them again")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "real.json", help="the summary JSON")
    ap.add_argument("-s", "--set", action="append", default=[], help="KEY=VALUE override of the template (repeatable)")
    ap.add_argument("--also", action="append", default=[], help="another template's finished runs to rank beside")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False)])
    out = ROOT / "results" / "bench"
    work = out / "real"
    template = load_recipe(args.template, [f"output_dir={work}", *args.set])
    results: dict[str, Any] = {}
    for name, (raw, metric) in recipes(args.data, template, args.tasks.split(","), work).items():
        metrics = complete(work / raw["name"] / "metrics.json") if args.reuse else None
        if metrics is None:
            metrics = run_recipe(parse_recipe(raw, f"bench/real.py ({name})"), "bench/real.py").metrics
        runs = {template.name: metrics} | finished(work, args.also, name)
        results[name] = summarize(name, metric, runs) | {
            # the runs' own, also when --reuse reads them
            "minutes": sum(p.seconds for m in runs.values() for p in m.passes) / 60,
            "max_train_samples": raw["task"].get("max_train_samples"),
        }
    glue = [r for n, r in results.items() if n in TASKS]
    summary = {
        "machine": cpu(),
        "template": str(args.template),
        "also": args.also,
        "tasks": results,
        "glue_score": {
            "tasks": [r["task"] for r in glue],
            "teacher": 100 * sum(r["teacher"] for r in glue) / len(glue) if glue else None,
            "student": 100 * sum(r["student"] for r in glue) / len(glue) if glue else None,
        },
        "missing": [n for n in args.tasks.split(",") if n not in results],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    table = Table(title=f"real tasks ({summary['machine']})")
    for c in ("task", "metric", "teacher", "student (within 1 pt)", "form", "x fastest", "best >= 2x", "best >= 3x"):
        table.add_column(c)
    cell = lambda b: f"{100 * b['score']:.1f} ({b['speedup']:.2f}x)" if b else "-"
    for name, r in results.items():
        table.add_row(
            name,
            r["metric"],
            f"{100 * r['teacher']:.1f}",
            f"{100 * r['student']:.1f}" + ("" if r["within_one_point"] else " *"),
            f"{r['run']}: {r['student_form']}" if args.also else r["student_form"],
            f"{r['speedup']:.2f}",
            cell(r["best_at_2x"]),
            cell(r["best_at_3x"]),
        )
    Console().print(table)
    g = summary["glue_score"]
    if glue:
        print(f"GLUE score over {len(glue)} tasks: teacher {g['teacher']:.1f}, students {g['student']:.1f}")
    print(f"missing: {summary['missing']}; wrote {args.out}")


if __name__ == "__main__":
    main()
