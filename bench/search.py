"""Search benchmark on the embedded default: NSGA-II (default sampler) vs random sampling, equal budget.

Runs recipes/quickstart.yaml's search twice with the same seed and trial budget - once with the default
sampler, once with random sampling - as two studies, then reports each front's hypervolume, the fastest
student within 1 pt of the teacher's test accuracy, and writes both studies into one overlaid report
(reports/bench-search/). Trials here distill longer than the quickstart's (see --distill-samples, --epochs).
Then the distinct front students at least --refine-min-speedup fast are distilled again on the whole
train split (search with a cheap proxy, retrain what it found) and re-measured.
Writes results/bench/search.json.

    python bench/search.py [--trials 10] [--distill-samples 4000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import optuna
import pandas as pd
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from compress.core.atomic import atomic_write_json
from compress.core.records import TeacherReference
from compress.pipeline.runner import run_recipe
from compress.recipe import load_recipe
from compress.search.frontier import pareto
from compress.search.report import build, load_points
from compress.search.study import search

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--distill-samples", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--samplers", default="nsga2,random")
    ap.add_argument("--refine-min-speedup", type=float, default=4.3, help="retrain front students at least this fast (0: skip)")
    ap.add_argument("--refine-epochs", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False)])
    recipe = ROOT / "recipes" / "quickstart.yaml"
    folders, minutes = [], {}
    for sampler in args.samplers.split(","):
        sets = [
            f"search.study=bench-search-{sampler}",
            f"search.sampler={sampler}",
            f"search.trials={args.trials}",
            f"passes.distill.max_train_samples={args.distill_samples}",
            f"passes.distill.epochs={args.epochs}",
            f"output_dir={ROOT / 'results'}",
            f"cache_dir={ROOT / 'results' / 'cache'}",
        ]
        folder = search(recipe, sets, resume=True)  # a finished study is reused: rerunning only re-reports
        folders.append(folder)
        trials = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}").trials
        done = [t for t in trials if t.datetime_complete]
        minutes[sampler] = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds() / 60
    out = build(folders, ROOT / "reports" / "bench-search")
    summary = json.loads((out / "summary.json").read_text())
    teacher = TeacherReference.model_validate(summary["teacher"])
    onnx_ms, test_acc = teacher.latency["teacher.onnx"].median_ms, teacher.test["accuracy"] if teacher.test else float("nan")
    onnx_factor = onnx_ms / teacher.latency_ms  # speedup vs eager -> vs the teacher in ONNX Runtime fp32
    hv = summary["hypervolume_by_source"]
    sources = {s: f.name for s, f in zip(args.samplers.split(","), folders, strict=True)}
    per = {}
    for sampler, name in sources.items():
        one = json.loads((build([ROOT / "results" / name], ROOT / "results" / "bench" / f"report-{name}") / "summary.json").read_text())
        per[sampler] = {
            "hypervolume": hv[name],
            "best_speedup_within_1pt": one["best_speedup_within_1pt_test"],
            "front_size": one["front_size"],
            "trials": one["trials"],
            "minutes": minutes[sampler],
        }
    default = args.samplers.split(",")[0]
    best = summary["best_speedup_within_1pt_test"]
    result = {
        "trials_per_sampler": args.trials,
        "distill_samples": args.distill_samples,
        "epochs": args.epochs,
        "best_speedup_within_1pt": best,
        "best_speedup_within_1pt_vs_teacher_onnx": best * onnx_factor if best else None,
        "hypervolume_default_sampler": per[default]["hypervolume"],
        "hypervolume_random": per.get("random", {}).get("hypervolume"),
        "teacher": {"test_accuracy": test_acc, "latency_ms": teacher.latency_ms, "latency_onnx_ms": onnx_ms},
        "samplers": per,
        "report": str(out.relative_to(ROOT)),
    }
    if args.refine_min_speedup:
        result["refined"] = refine(folders, args.refine_min_speedup, args.refine_epochs, test_acc)
        ok = [r for r in result["refined"] if r["test_accuracy"] >= test_acc - 0.01]
        result["best_speedup_within_1pt_refined"] = max((r["speedup_vs_teacher"] for r in ok), default=None)
    atomic_write_json(ROOT / "results" / "bench" / "search.json", result)
    table = Table(title=f"bench/search.py: {args.trials} trials per sampler, distill {args.distill_samples} tweets x {args.epochs} epochs")
    for col in ("sampler", "hypervolume", "front", "fastest within 1 pt (x teacher eager)", "minutes"):
        table.add_column(col, justify="right")
    for sampler, r in per.items():
        b = r["best_speedup_within_1pt"]
        table.add_row(sampler, f"{r['hypervolume']:.4f}", str(r["front_size"]), f"{b:.2f}" if b else "-", f"{r['minutes']:.1f}")
    Console().print(table)
    Console().print(
        f"best within 1 pt: {best:.2f}x vs teacher torch eager, {best * onnx_factor:.2f}x vs teacher ONNX Runtime fp32"
        if best
        else "no student within 1 pt"
    )
    if result.get("refined"):
        t2 = Table(title=f"front students >= {args.refine_min_speedup}x, distilled again: whole train split, {args.refine_epochs} epochs")
        for col in ("student", "layers", "groups", "proxy test acc", "test acc [95% CI]", "gap pt", "x teacher"):
            t2.add_column(col, justify="right")
        for r in result["refined"]:
            t2.add_row(
                r["from"],
                str(r["layers"]),
                r["groups"],
                f"{r['proxy_test_accuracy']:.4f}",
                f"{r['test_accuracy']:.4f} [{r['test_ci95'][0]:.3f}, {r['test_ci95'][1]:.3f}]",
                f"{r['gap_pt']:+.2f}",
                f"{r['speedup_vs_teacher']:.2f}",
            )
        Console().print(t2)


def refine(folders: list[Path], min_speedup: float, epochs: int, teacher_test: float) -> list[dict]:
    """Search with a cheap proxy, then retrain what it found: each distinct front student at least
    `min_speedup` fast is distilled again on the whole train split for `epochs` epochs and re-measured."""
    points = pd.concat([load_points(f)[0] for f in folders], ignore_index=True)
    front = pareto(points)
    chosen = front[front["speedup_vs_teacher"] >= min_speedup].drop_duplicates(subset=["groups", "layers"])
    out = []
    for row in chosen.itertuples():
        name = f"refine-{row.source}-{int(row.trial)}"
        recipe = load_recipe(
            Path(row.path) / "recipe.yaml",
            [
                f"name={name}",
                f"output_dir={ROOT / 'results' / 'bench' / 'runs'}",
                "passes.distill.max_train_samples=null",
                f"passes.distill.epochs={epochs}",
                "passes.evaluate.latency_runs=100",
            ],
        )
        ev = run_recipe(recipe).metrics.forms_of("student")
        best = min((f for f in ev.values() if f.latency and f.form != "student"), key=lambda f: f.latency.median_ms if f.latency else 0)
        out.append(
            {
                "from": f"{row.source}#{int(row.trial)}",
                "groups": row.groups,
                "layers": int(row.layers),
                "form": best.form,
                "proxy_test_accuracy": row.test_accuracy,
                "test_accuracy": best.splits["test"]["accuracy"],
                "test_ci95": best.splits["test"].ci95["accuracy"],
                "gap_pt": 100 * (teacher_test - best.splits["test"]["accuracy"]),
                "latency_ms": best.latency.median_ms if best.latency else None,
                "speedup_vs_teacher": best.latency.speedup if best.latency else None,
            }
        )
        logging.info(
            "refined %s: test acc %.4f (proxy %.4f), %.2fx teacher",
            out[-1]["from"],
            out[-1]["test_accuracy"],
            row.test_accuracy,
            out[-1]["speedup_vs_teacher"],
        )
    return out


if __name__ == "__main__":
    main()
