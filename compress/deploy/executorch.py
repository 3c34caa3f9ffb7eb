"""ExecuTorch: a `.pte` program with the XNNPACK delegate (the phone runtime that succeeded PyTorch Mobile).

    MatMul inference form -> torch.export (dynamic batch and sequence) -> [int8: PT2E with XNNPACK's
    dynamic per-channel quantizer] -> to_edge_transform_and_lower(XnnpackPartitioner) -> model.pte

The same `.pte` runs unchanged on Android and iOS. Timed here it runs XNNPACK's x86 kernels, which are not
a phone's: the figures rank models for this machine only (README, "ARM honesty").
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.core.atomic import atomic_path
from compress.core.deps import require
from compress.core.errors import CompressError, first_line
from compress.data.encoding import MODEL_INPUTS, placeholder_inputs
from compress.deploy.matmul_form import inference_form
from compress.modeling.runners import Batch, Runner

INSTALL = "pip install 'compress[executorch]'"
MAX_SEQ = 512  # the exported program accepts any sequence length up to this (and the model's position table)
# ExecuTorch plans memory for the largest shape a program accepts (12 heads x 512 x 512 scores per example), so the
# batch axis is capped; the runner feeds bigger batches in slices. Phones run batch 1.
MAX_BATCH = 8


def _export(module: torch.nn.Module, example: tuple[torch.Tensor, ...], max_seq: int | None) -> Any:
    """torch.export; with `max_seq`, batch and sequence are dynamic (`Dim`s shared by every input)."""
    from torch.export import Dim, export

    if max_seq is None:
        return export(module, example)
    batch, seq = Dim("batch", min=1, max=MAX_BATCH), Dim("seq", min=2, max=max_seq)
    return export(module, example, dynamic_shapes=tuple({0: batch, 1: seq} for _ in example))


def build(model: torch.nn.Module, path: Path, int8: bool) -> Path:
    """Write `model` (BERT or SqueezeBERT classifier) as an ExecuTorch program with the XNNPACK delegate,
    accepting batches of 1 to MAX_BATCH and any sequence length up to the position table (at most MAX_SEQ)."""
    return build_module(
        inference_form(model),
        placeholder_inputs(2, 16),
        path,
        int8,
        max_seq=min(MAX_SEQ, int(getattr(model.config, "max_position_embeddings", MAX_SEQ))),
    )


def build_module(
    module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path, int8: bool, max_seq: int | None = None
) -> Path:
    """Lower any module to `path` (.pte, XNNPACK); fixed shapes unless `max_seq` (the latency model's blocks: fixed)."""
    exir = require("executorch.exir", "deploy target executorch", INSTALL)
    xnnpack = require("executorch.backends.xnnpack.partition.xnnpack_partitioner", "deploy target executorch", INSTALL)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = _export(module, example, max_seq)
            if int8:
                program = _export(_quantize(program.module(), example), example, max_seq)
            lowered = exir.to_edge_transform_and_lower(
                program, partitioner=[xnnpack.XnnpackPartitioner()]
            ).to_executorch()
        except Exception as e:  # torch.export / EXIR raise many types; the user needs the operator and the target
            raise CompressError(
                f"deploy target executorch-xnnpack-{'int8' if int8 else 'fp32'} cannot lower "
                f"{type(module).__name__}: {why(e)}"
            ) from e
    with atomic_path(path) as tmp:
        tmp.write_bytes(lowered.buffer)
    return path


def _quantize(graph: torch.fx.GraphModule, example: tuple[torch.Tensor, ...]) -> torch.fx.GraphModule:
    """Dynamic int8 (activations quantized per call, weights per channel): XNNPACK's quantizer through PT2E."""
    quantizer_mod = require(
        "executorch.backends.xnnpack.quantizer.xnnpack_quantizer", "deploy target executorch-xnnpack-int8", INSTALL
    )
    pt2e = require("torchao.quantization.pt2e.quantize_pt2e", "deploy target executorch-xnnpack-int8", INSTALL)
    config = quantizer_mod.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    prepared = pt2e.prepare_pt2e(graph, quantizer_mod.XNNPACKQuantizer().set_global(config))
    prepared(*example)  # dynamic quantization observes nothing worth calibrating; one call finalizes the observers
    return pt2e.convert_pt2e(prepared)


def why(e: Exception) -> str:
    """The operator a lowering failed on, or the error's first line, with what to do."""
    op = re.search(r"(aten\.[\w.]+)", str(e))
    if op:
        return (
            f"operator {op.group(1)} is not supported there (not in the Core ATen opset ExecuTorch runs); "
            "choose another target"
        )
    return f"{first_line(e)}; choose another target"


def set_threads(threads: int | None) -> None:
    """XNNPACK's thread pool is one per process: size it as the other runtimes' (`threads`)."""
    pool = require("executorch.extension.pybindings.portable_lib", "deploy target executorch", INSTALL)
    if threads and pool._threadpool_get_thread_count() != threads:  # a reset logs a line; only when it changes anything
        pool._unsafe_reset_threadpool(threads)


def load(path: Path, threads: int | None) -> Any:
    """The program's `forward` method, ready to execute."""
    runtime = require("executorch.runtime", "deploy target executorch", INSTALL)
    set_threads(threads)
    return runtime.Runtime.get().load_program(str(path)).load_method("forward")


def runner(path: Path, threads: int | None = 2) -> Runner:
    """An ExecuTorch program (XNNPACK) as a runner: padded batch -> logits."""
    method = load(path, threads)

    def run(b: Batch) -> np.ndarray:
        n = len(b["input_ids"])
        parts = [
            method.execute([b[k][i : i + MAX_BATCH] for k in MODEL_INPUTS])[0].numpy() for i in range(0, n, MAX_BATCH)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    return run
