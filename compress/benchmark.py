"""`compress bench`: latency of saved models under torch eager and ONNX Runtime (fp32, int8)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from compress.errors import CompressError
from compress.latency import flops_per_sequence, params, real_inputs, repeated
from compress.models import load_student, load_tokenizer
from compress.quantization import onnxruntime_int8, torch_int8
from compress.runtime import INPUTS, export, session

BACKENDS = ("torch", "torch-int8", "ort", "ort-int8")


def model_folders(path: Path) -> list[Path]:
    """A model folder itself, or every model of a run folder (results/<name>/models/*)."""
    path = Path(path)
    if (path / "config.json").exists():
        return [path]
    models = sorted(p for p in (path / "models").glob("*") if (p / "config.json").exists())
    if not models:
        raise CompressError(f"{path}: neither a model folder (config.json) nor a run folder (models/*/config.json)")
    return models


def bench(path: Path, backends: list[str], batch: int = 1, seq: int = 128, threads: int = 2, runs: int = 30, repeats: int = 1) -> list[dict]:
    """Time every model under every backend, interleaved, `repeats` times; one row per (model, backend)."""
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise CompressError(f"unknown backend(s) {bad}; choose from {', '.join(BACKENDS)}")
    torch.set_num_threads(threads)
    folders = model_folders(path)
    fns, meta = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        feeds = None
        for folder in folders:
            model = load_student(folder).eval()
            if feeds is None:
                feeds = {k: torch.from_numpy(v) for k, v in real_inputs(load_tokenizer(str(folder)), batch, seq).items()}
            info = {"model": folder.name, "params": params(model), "gflops": flops_per_sequence(model.config, seq) * batch / 1e9}
            for backend in backends:
                fn = _runner(model, folder, backend, Path(tmp) / folder.name, threads)
                key = f"{folder.name} / {backend}"
                fns[key], meta[key] = (lambda f=fn: f(feeds)), info | {"backend": backend}
        with torch.no_grad():
            timings, redone = repeated(fns, runs=runs, repeats=repeats, max_redo=3 if repeats >= 3 else 0)
    base = next(iter(timings.values()))["median_ms"]
    rows = []
    for key, t in timings.items():
        rows.append(meta[key] | t | {"batch": batch, "seq": seq, "threads": threads, "repeats_redone": len(redone),
                                     "gflops_per_s": meta[key]["gflops"] / (t["median_ms"] / 1000), "speedup_vs_first": base / t["median_ms"]})
    return rows


def _runner(model, folder: Path, backend: str, tmp: Path, threads: int):
    if backend == "torch":
        return lambda b: model(**{k: b[k] for k in INPUTS})
    if backend == "torch-int8":
        form = torch_int8(model)
        return lambda b: form(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    fp32 = folder / "model.onnx"
    if not fp32.exists():
        fp32 = tmp / "model.onnx"
        export(model, fp32)
    path = fp32
    if backend == "ort-int8":
        path = folder / "model.int8.onnx"
        if not path.exists():
            path = tmp / "model.int8.onnx"
            onnxruntime_int8(fp32, path, static=False, per_channel=False)
    sess = session(path, threads)
    return lambda b: sess.run(["logits"], {k: b[k].numpy() for k in INPUTS})
