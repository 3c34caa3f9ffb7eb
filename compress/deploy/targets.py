"""Deploy targets: a runtime and a precision a model can be shipped in, and how to build a model in each.

    torch-fp32                the transformers model itself (eager PyTorch)
    onnxruntime-fp32          the MatMul inference form exported to ONNX (`onnx.export`)
    onnxruntime-int8          the same graph, dynamic int8 through optimum (`quantize.onnxruntime_int8`)
    openvino-fp32             OpenVINO IR of that ONNX graph                       (extra compress[openvino])
    openvino-int8             the IR quantized by NNCF, calibrated on task data    (extra compress[openvino])
    executorch-xnnpack-fp32   ExecuTorch program, XNNPACK delegate (phones)        (extra compress[executorch])
    executorch-xnnpack-int8   the same after PT2E dynamic int8 (XNNPACK quantizer) (extra compress[executorch])

The teacher's forms are what a user gets without compress, so every speed-up is measured against the
fastest of them (timed in the same run). `compile_module` builds any torch module in a target for timing
(the latency model's blocks), so blocks and whole models go through the same exporters and quantizers.
"""

from __future__ import annotations

import difflib
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from compress.core.deps import installed
from compress.core.errors import CompressError
from compress.core.hashing import state_dict_hash
from compress.deploy import executorch, openvino
from compress.deploy.matmul_form import FORM_VERSION
from compress.deploy.onnx import export, ort_runner, session
from compress.deploy.quantize import onnxruntime_int8
from compress.modeling.runners import Batch, Runner, torch_runner


@dataclass(frozen=True)
class Target:
    name: str
    runtime: str
    precision: str
    suffix: str  # the variant name of a model in this target: "<model>.<suffix>" ("" = the model itself)
    artifact: str = ""  # its file inside a model folder ("" for torch)
    fuse_dense_qkv: bool = True  # how the exporter lays out dense Q/K/V for this runtime (`matmul_form.Layer`)


_OV_QKV = openvino.FUSE_DENSE_QKV
TARGETS = {
    t.name: t
    for t in (
        Target("torch-fp32", "torch", "fp32", ""),
        Target("onnxruntime-fp32", "onnxruntime", "fp32", "onnx", "model.onnx"),
        Target("onnxruntime-int8", "onnxruntime", "int8", "int8", "model.int8.onnx"),
        Target("openvino-fp32", "openvino", "fp32", "openvino", f"openvino/{openvino.XML}", _OV_QKV),
        Target("openvino-int8", "openvino", "int8", "openvino-int8", f"openvino-int8/{openvino.XML}", _OV_QKV),
        Target("executorch-xnnpack-fp32", "executorch", "fp32", "pte", "model.pte"),
        Target("executorch-xnnpack-int8", "executorch", "int8", "pte-int8", "model.int8.pte"),
    )
}
EXTRAS = {"openvino": ("openvino", "nncf"), "executorch": ("executorch", "torchao")}  # runtime -> modules of its extra


def baseline_runtimes() -> tuple[str, ...]:
    """The server runtimes the teacher is always timed in: what a user gets without compress, one line each.
    OpenVINO joins when its extra is installed (its NNCF int8 teacher was the fastest teacher form measured here:
    bench/targets.py); ExecuTorch, a phone runtime slower on this x86 CPU, only when a student is timed in it."""
    return ("torch", "onnxruntime", *(("openvino",) if not _missing("openvino") else ()))


def _missing(runtime: str) -> list[str]:
    return [m for m in EXTRAS.get(runtime, ()) if not installed(m)]


def check_installed(runtime: str) -> None:
    """Raise one line naming the extra when `runtime`'s packages are missing (before a run does any work)."""
    missing = _missing(runtime)
    if missing:
        raise CompressError(
            f"deploy target {runtime} needs {', '.join(missing)}, which is not installed: pip install "
            f"'compress[{runtime}]'"
        )


ALIASES = {
    "torch": "torch-fp32",
    "onnxruntime": "onnxruntime-fp32",
    "openvino": "openvino-fp32",
    "executorch-xnnpack": "executorch-xnnpack-fp32",
}


def get_target(name: str) -> Target:
    """The target called `name`; a runtime's bare name (`openvino`, `executorch-xnnpack`) is its fp32 target."""
    name = ALIASES.get(name, name)
    if name not in TARGETS:
        close = difflib.get_close_matches(name, TARGETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CompressError(
            f"unknown deploy target {name!r}{hint}; available: {', '.join(TARGETS)} (or {', '.join(ALIASES)})"
        )
    return TARGETS[name]


def target_of(runtime: str, precision: str) -> Target | None:
    return next((t for t in TARGETS.values() if (t.runtime, t.precision) == (runtime, precision)), None)


def form_name(model: str, target: Target) -> str:
    return f"{model}.{target.suffix}" if target.suffix else model


Calibration = Callable[[], list[Batch]]  # task batches, drawn only by a target that calibrates (OpenVINO int8)


def build(model: torch.nn.Module, target: Target, path: Path, calib: Calibration | None = None) -> Path | None:
    """Write `model` in `target` at `path` (its artifact); None for torch, which needs no artifact.
    `calib`: the batches OpenVINO int8 calibrates on (default random token ids: for random-weight anchors, timing
    only)."""
    if target.runtime == "torch":
        return None
    if target.runtime == "openvino":
        return openvino.build(model, path.parent, target.precision == "int8", calib or (lambda: _random_batches(model)))
    if target.runtime == "executorch":
        return executorch.build(model, path, target.precision == "int8")
    if target.precision == "fp32":
        export(model, path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # the fp32 graph is only the quantizer's input
        export(model, Path(tmp) / "model.onnx")
        onnxruntime_int8(Path(tmp) / "model.onnx", path, static=False, per_channel=False)
    return path


def _random_batches(model: torch.nn.Module, n: int = 8, seq: int = 64) -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    ones, zeros = torch.ones(1, seq, dtype=torch.long), torch.zeros(1, seq, dtype=torch.long)
    vocab = int(getattr(model.config, "vocab_size", 30522))
    ids = lambda: torch.randint(1000, vocab, (1, seq), generator=g)
    return [{"input_ids": ids(), "attention_mask": ones, "token_type_ids": zeros} for _ in range(n)]


def open_runner(target: Target, path: Path, threads: int | None) -> Runner:
    """The artifact of `target` at `path`, loaded in its runtime, as a runner."""
    if target.runtime == "openvino":
        return openvino.runner(path, threads)
    if target.runtime == "executorch":
        return executorch.runner(path, threads)
    return ort_runner(path, threads)


def cached_runner(
    model: torch.nn.Module, target: Target, cache_dir: Path, threads: int | None, calib: Calibration | None = None
) -> Runner:
    """`model` in `target`, built once per set of weights and exporter version (`FORM_VERSION`: a changed graph or
    int8 recipe is built anew) into `cache_dir/deploy/` (the teacher's forms in every trial)."""
    if target.runtime == "torch":
        return torch_runner(model, next(model.parameters()).device)  # where it is: never moved as a side effect
    key = f"{state_dict_hash(model)}-v{FORM_VERSION}"
    path = Path(cache_dir) / "deploy" / key / target.name / target.artifact
    if not path.is_file():
        build(model, target, path, calib)
    return open_runner(target, path, threads)


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
    if target.runtime == "executorch":
        method = executorch.load(
            executorch.build_module(module, tuple(inputs.values()), folder / "block.pte", target.precision == "int8"),
            threads,
        )
        given = list(inputs.values())
        return lambda: method.execute(given)
    path = folder / "block.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, tuple(inputs.values()), str(path), input_names=list(inputs), opset_version=17, dynamo=False
        )
    if target.runtime == "openvino":
        compiled = openvino.compile_block(path, threads, calib=dict(inputs) if target.precision == "int8" else None)
        request, names = compiled.create_infer_request(), {i.any_name for i in compiled.inputs}
        feed = {k: v.numpy() for k, v in inputs.items() if k in names}
        return lambda: request.infer(feed)
    if target.precision == "int8":
        onnxruntime_int8(path, folder / "block.int8.onnx", static=False, per_channel=False)
        path = folder / "block.int8.onnx"
    sess = session(path, threads)
    names = {i.name for i in sess.get_inputs()}  # the exporter drops inputs a graph does not use
    feed = {k: v.numpy() for k, v in inputs.items() if k in names}
    return lambda: sess.run(None, feed)
