"""Search benchmark on the embedded default: NSGA-II (default sampler) vs random sampling, equal budget.

Runs recipes/quickstart.yaml's search twice with the same seed and trial budget - once with the default
sampler, once with random sampling - as two studies, then reports each front's hypervolume, the fastest
student within 1 pt of the teacher's test accuracy, and writes both studies into one overlaid report
(reports/bench-search/). Trials here distill longer than the quickstart's (see --distill-samples, --epochs).
Writes results/bench/search.json.

    python bench/search.py [--trials 10] [--distill-samples 4000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from compress.io import atomic_write_json
from compress.report import build
from compress.search import search

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--distill-samples", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--samplers", default="nsga2,random")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False)])
    recipe = ROOT / "recipes" / "quickstart.yaml"
    folders, minutes = [], {}
    for sampler in args.samplers.split(","):
        sets = [f"search.study=bench-search-{sampler}", f"search.sampler={sampler}", f"search.trials={args.trials}",
                f"passes.distill.max_train_samples={args.distill_samples}", f"passes.distill.epochs={args.epochs}",
                f"output_dir={ROOT / 'results'}", f"cache_dir={ROOT / 'results' / 'cache'}"]
        t0 = time.perf_counter()
        folders.append(search(recipe, sets, resume=True))
        minutes[sampler] = (time.perf_counter() - t0) / 60
    out = build(folders, ROOT / "reports" / "bench-search")
    summary = json.loads((out / "summary.json").read_text())
    teacher = summary["teacher"]
    onnx_factor = teacher["latency_onnx_ms"] / teacher["latency_ms"]  # speedup vs eager -> vs the teacher in ONNX Runtime fp32
    hv = summary["hypervolume_by_source"]
    sources = {s: f.name for s, f in zip(args.samplers.split(","), folders)}
    per = {}
    for sampler, name in sources.items():
        one = json.loads((build([ROOT / "results" / name], ROOT / "results" / "bench" / f"report-{name}") / "summary.json").read_text())
        per[sampler] = {"hypervolume": hv[name], "best_speedup_within_1pt": one["best_speedup_within_1pt_test"],
                        "front_size": one["front_size"], "trials": one["trials"], "minutes": minutes[sampler]}
    default = args.samplers.split(",")[0]
    best = summary["best_speedup_within_1pt_test"]
    result = {
        "trials_per_sampler": args.trials, "distill_samples": args.distill_samples, "epochs": args.epochs,
        "best_speedup_within_1pt": best, "best_speedup_within_1pt_vs_teacher_onnx": best * onnx_factor if best else None,
        "hypervolume_default_sampler": per[default]["hypervolume"], "hypervolume_random": per.get("random", {}).get("hypervolume"),
        "teacher": {"test_accuracy": teacher["test"]["accuracy"], "latency_ms": teacher["latency_ms"], "latency_onnx_ms": teacher["latency_onnx_ms"]},
        "samplers": per, "report": str(out.relative_to(ROOT)),
    }
    atomic_write_json(ROOT / "results" / "bench" / "search.json", result)
    table = Table(title=f"bench/search.py: {args.trials} trials per sampler, distill {args.distill_samples} tweets x {args.epochs} epochs")
    for col in ("sampler", "hypervolume", "front", "fastest within 1 pt (x teacher eager)", "minutes"):
        table.add_column(col, justify="right")
    for sampler, r in per.items():
        b = r["best_speedup_within_1pt"]
        table.add_row(sampler, f"{r['hypervolume']:.4f}", str(r["front_size"]), f"{b:.2f}" if b else "-", f"{r['minutes']:.1f}")
    Console().print(table)
    Console().print(f"best within 1 pt: {best:.2f}x vs teacher torch eager, {best * onnx_factor:.2f}x vs teacher ONNX Runtime fp32" if best else "no student within 1 pt")


if __name__ == "__main__":
    main()
