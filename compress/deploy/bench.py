"""`compress bench`: latency of saved models under torch eager, ONNX Runtime, OpenVINO and ExecuTorch (fp32, int8)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from compress.core.errors import CompressError
from compress.data.sources import sample_texts
from compress.deploy.flops import flops_per_sequence
from compress.deploy.latency import real_inputs, repeated
from compress.deploy.quantize import torch_int8
from compress.deploy.targets import TARGETS, build, check_installed, open_runner
from compress.modeling.loading import load_student, load_tokenizer
from compress.modeling.runners import Runner, count_parameters, torch_runner

# backend name -> the deploy target it times (torch-int8: torch's dynamic quantization, no deploy target)
BACKENDS = {
    "torch": "torch-fp32",
    "torch-int8": None,
    "ort": "onnxruntime-fp32",
    "ort-int8": "onnxruntime-int8",
    "openvino": "openvino-fp32",
    "openvino-int8": "openvino-int8",
    "executorch": "executorch-xnnpack-fp32",
    "executorch-int8": "executorch-xnnpack-int8",
}


def model_folders(path: Path) -> list[Path]:
    """A model folder itself, or every model of a run folder (results/<name>/models/*)."""
    path = Path(path)
    if (path / "config.json").exists():
        return [path]
    models = sorted(p for p in (path / "models").glob("*") if (p / "config.json").exists())
    if not models:
        raise CompressError(f"{path}: neither a model folder (config.json) nor a run folder (models/*/config.json)")
    return models


def bench(
    path: Path, backends: list[str], batch: int = 1, seq: int = 128, threads: int = 2, runs: int = 30, repeats: int = 1
) -> list[dict[str, Any]]:
    """Time every model under every backend, interleaved, `repeats` times; one row per (model, backend).

    Inputs are real token ids: the embedded tweets, concatenated to exactly `seq` tokens."""
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise CompressError(f"unknown backend(s) {bad}; choose from {', '.join(BACKENDS)}")
    for b in backends:
        check_installed(TARGETS[BACKENDS[b] or "torch-fp32"].runtime)
    torch.set_num_threads(threads)
    folders = model_folders(path)
    fns: dict[str, Callable[[], object]] = {}
    meta: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        feeds = None
        for folder in folders:
            model = load_student(folder).eval()
            if feeds is None:
                feeds = real_inputs(load_tokenizer(str(folder)), sample_texts(), batch, seq)
            info = {
                "model": folder.name,
                "params": count_parameters(model),
                "gflops": flops_per_sequence(model.config, seq) * batch / 1e9,
            }
            for backend in backends:
                run = _runner(model, folder, backend, Path(tmp) / folder.name, threads)
                key = f"{folder.name} / {backend}"
                fns[key], meta[key] = partial(run, feeds), info | {"backend": backend}
        timings, redone = repeated(fns, runs=runs, repeats=repeats, max_redo=3 if repeats >= 3 else 0)
    base = next(iter(timings.values())).p10_ms
    extra = {"batch": batch, "seq": seq, "threads": threads, "repeats_redone": len(redone)}
    return [
        meta[k]
        | t.as_dict()
        | extra
        | {"gflops_per_s": meta[k]["gflops"] / (t.median_ms / 1000), "speedup_vs_first": base / t.p10_ms}
        for k, t in timings.items()
    ]


def _runner(model: torch.nn.Module, folder: Path, backend: str, tmp: Path, threads: int) -> Runner:
    """The run's artifact when export made it, else built here (OpenVINO int8 then calibrates on random ids: latency
    only)."""
    name = BACKENDS[backend]
    if name is None:
        return torch_runner(torch_int8(model))
    target = TARGETS[name]
    if target.runtime == "torch":
        return torch_runner(model)
    path = folder / target.artifact
    if not path.exists():
        path = build(model, target, tmp / target.artifact) or path
    return open_runner(target, path, threads)


COLUMNS = ("model / backend", "p10 ms", "median ms", "p90 ms", "IQR ms", "CV", "CV of medians", "params M", "GFLOPs")


def table(rows: list[dict[str, Any]], batch: int, seq: int, threads: int, runs: int, repeats: int) -> Table:
    """`bench`'s rows as the table `compress bench` prints."""
    out = Table(title=f"latency: batch {batch}, seq {seq}, {threads} threads, {repeats} x {runs} interleaved runs")
    for col in (*COLUMNS, "GFLOP/s", "x first row (p10)"):
        out.add_column(col, justify="left" if col == "model / backend" else "right")
    for r in rows:
        stats = [f"{r[k]:.2f}" for k in ("p10_ms", "median_ms", "p90_ms", "iqr_ms")]
        out.add_row(
            f"{r['model']} / {r['backend']}",
            *stats,
            f"{r['cv']:.3f}",
            f"{r['cv_of_medians']:.3f}" if repeats > 1 else "-",
            f"{r['params'] / 1e6:.1f}",
            f"{r['gflops']:.2f}",
            f"{r['gflops_per_s']:.0f}",
            f"{r['speedup_vs_first']:.2f}",
        )
    out.caption = (
        "real token ids; x first row: against the first row of this table, timed in the same run "
        "(compress bench does not know which model is the teacher)"
    )
    return out
