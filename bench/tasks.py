"""Task kinds on real data: the embedded tweets as a regression task and as a binary (GLUE-metric) task.

1. regression: the tweets carry a real float column beside their class, `confidence` (how sure the annotators
   were, 0.26-1.0); predicted with `task.kind: regression`, metric Spearman: fine-tune the teacher (MSE), convert
   to a grouped SqueezeBERT student, distill on the teacher's scores (MSE), export, int8, evaluate.
2. binary: negative vs positive tweets (neutral filtered out), metric `f1` of the positive class, with `mcc`
   beside it (the MRPC/QQP and CoLA conventions).
Every form is timed against the teacher's fastest deploy form in the same run (seq 128, batch 1, 2 threads);
metrics carry 95% bootstrap intervals. Writes results/bench/tasks.json.

    python bench/tasks.py [--reuse]          # ~20 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from compress.core.records import read_metrics
from compress.pipeline.runner import run_recipe

from common import ROOT, TASK, bench_recipe

PASSES = [
    {"name": "finetune_teacher", "options": {"epochs": 2, "lr": 1.0e-4, "batch_size": 32}},
    {"name": "convert", "options": {"groups": "4,4,4,1,4,4", "layers": 3, "init": "permuted", "fit_samples": 128}},
    {"name": "distill", "options": {"epochs": 3, "lr": 3.0e-4, "alpha": 0.5}},
    {"name": "export", "options": {"models": ["student"]}},
    {"name": "quantize", "options": {"backend": "onnxruntime", "mode": "dynamic", "suffix": "int8"}},
    {
        "name": "evaluate",
        "options": {
            "models": ["teacher", "student", "student.int8"],
            "latency": True,
            "latency_seq": 128,
            "latency_runs": 40,
        },
    },
]


KINDS = {
    "regression": TASK | {"kind": "regression", "label_column": "confidence", "metric": "spearman"},
    "binary": TASK
    | {
        "labels": ["negative", "positive"],
        "metric": "f1",
        "filters": [{"column": "sentiment", "op": "!=", "value": "neutral"}],
    },
}
SHOWN = {"regression": ("spearman", "pearson", "mse"), "binary": ("f1", "mcc", "accuracy")}


def run_kind(kind: str, out: Path, reuse: bool) -> dict:
    """Run one kind's recipe (or, with --reuse, read its finished run) and summarize its test scores and latency."""
    t0 = time.time()
    done = out / "runs" / f"tasks-{kind}" / "metrics.json"
    if reuse and done.is_file() and read_metrics(done).status == "complete":
        m = read_metrics(done)
    else:
        m = run_recipe(bench_recipe(f"tasks-{kind}", out / "runs", PASSES, task=KINDS[kind]), "bench/tasks.py").metrics
    rows = {}
    for name, ev in m.evaluations.items():
        test = ev.splits.get("test")
        rows[name] = {
            "runtime": ev.runtime,
            "precision": ev.precision,
            "test": test.metrics if test else None,
            "test_ci95": test.ci95 if test else None,
            "p10_ms": ev.latency.p10_ms if ev.latency else None,
            "speedup_vs_teacher_fastest": ev.latency.speedup if ev.latency else None,
            "reference": ev.latency.reference if ev.latency else None,
        }
    return {
        "task": KINDS[kind],
        "metric": m.metric,
        "test_examples": m.evaluations["teacher"].splits["test"].n,
        "minutes": (time.time() - t0) / 60,
        "forms": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reuse", action="store_true", help="summarize a kind's finished run instead of running it again")
    args = ap.parse_args()
    out = ROOT / "results" / "bench"
    results = {kind: run_kind(kind, out, args.reuse) for kind in KINDS}
    out.mkdir(parents=True, exist_ok=True)
    (out / "tasks.json").write_text(json.dumps(results, indent=2))
    for kind, result in results.items():
        first, *rest = SHOWN[kind]
        table = Table(title=f"{kind} on the embedded tweets (test, {result['test_examples']} tweets)")
        for c in ("form", f"{first} [95% CI]", *rest, "ms p10", "x teacher's fastest"):
            table.add_column(c)
        for name, r in result["forms"].items():
            t, ci = r["test"], r["test_ci95"]
            if not t:
                continue
            speed = f"{r['speedup_vs_teacher_fastest']:.2f}" if r["speedup_vs_teacher_fastest"] else "-"
            ms = f"{r['p10_ms']:.2f}" if r["p10_ms"] else "-"
            table.add_row(
                name,
                f"{t[first]:.3f} [{ci[first][0]:.3f}, {ci[first][1]:.3f}]",
                *(f"{t[k]:.3f}" for k in rest),
                ms,
                speed,
            )
        Console().print(table)
        print(f"{kind}: {result['minutes']:.1f} min")
    print(f"wrote {out / 'tasks.json'}")


if __name__ == "__main__":
    main()
