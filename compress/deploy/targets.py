"""Deploy targets: a runtime and a precision a model can be shipped in, and how to build a model in each.

    torch-fp32         the transformers model itself (eager PyTorch)
    onnxruntime-fp32   the MatMul inference form exported to ONNX (`onnx.export`)
    onnxruntime-int8   the same graph, dynamic int8 through optimum (`quantize.onnxruntime_int8`)

The teacher's forms are what a user gets without compress, so every speed-up is measured against the
fastest of them (timed in the same run). `compile_module` builds any torch module in a target for timing
(the latency model's blocks), so blocks and whole models go through the same export and quantizer.
"""

from __future__ import annotations

import difflib
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from compress.core.errors import CompressError
from compress.core.hashing import state_dict_hash
from compress.deploy.onnx import export, ort_runner, session
from compress.deploy.quantize import onnxruntime_int8
from compress.modeling.runners import Runner, torch_runner


@dataclass(frozen=True)
class Target:
    name: str
    runtime: str
    precision: str
    suffix: str  # the variant name of a model in this target: "<model>.<suffix>" ("" = the model itself)


TARGETS = {
    t.name: t
    for t in (
        Target("torch-fp32", "torch", "fp32", ""),
        Target("onnxruntime-fp32", "onnxruntime", "fp32", "onnx"),
        Target("onnxruntime-int8", "onnxruntime", "int8", "int8"),
    )
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        close = difflib.get_close_matches(name, TARGETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CompressError(f"unknown deploy target {name!r}{hint}; available: {', '.join(TARGETS)}")
    return TARGETS[name]


def target_of(runtime: str, precision: str) -> Target | None:
    return next((t for t in TARGETS.values() if (t.runtime, t.precision) == (runtime, precision)), None)


def form_name(model: str, target: Target) -> str:
    return f"{model}.{target.suffix}" if target.suffix else model


def build(model: torch.nn.Module, target: Target, path: Path) -> Path | None:
    """Write `model` in `target` to `path` (ONNX targets); None for torch, which needs no artifact."""
    if target.runtime == "torch":
        return None
    if target.precision == "fp32":
        export(model, path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # the fp32 graph is only the quantizer's input
        export(model, Path(tmp) / "model.onnx")
        onnxruntime_int8(Path(tmp) / "model.onnx", path, static=False, per_channel=False)
    return path


def cached_runner(model: torch.nn.Module, target: Target, cache_dir: Path, threads: int | None) -> Runner:
    """`model` in `target`, built once per set of weights into `cache_dir/deploy/` (the teacher's forms in every trial)."""
    if target.runtime == "torch":
        return torch_runner(model)
    path = Path(cache_dir) / "deploy" / state_dict_hash(model) / f"{target.name}.onnx"
    if not path.is_file():
        build(model, target, path)
    return ort_runner(path, threads)


def compile_module(
    module: torch.nn.Module, inputs: dict[str, torch.Tensor], target: Target, folder: Path, threads: int | None
) -> Callable[[], object]:
    """A zero-argument call of `module` on `inputs` in `target` (for timing a block of a model)."""
    module = module.eval().requires_grad_(False)
    if target.runtime == "torch":
        args = tuple(inputs.values())

        @torch.no_grad()
        def run() -> object:
            return module(*args)

        return run
    path = folder / "block.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(inputs.values()), str(path), input_names=list(inputs), opset_version=17, dynamo=False)
    if target.precision == "int8":
        onnxruntime_int8(path, folder / "block.int8.onnx", static=False, per_channel=False)
        path = folder / "block.int8.onnx"
    sess = session(path, threads)
    names = {i.name for i in sess.get_inputs()}  # the exporter drops inputs a graph does not use
    feed = {k: v.numpy() for k, v in inputs.items() if k in names}
    return lambda: sess.run(None, feed)
