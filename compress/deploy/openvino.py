"""OpenVINO: IR (`openvino.xml` + `.bin`) from the MatMul inference form's ONNX graph, int8 through NNCF.

The IR is converted from the same ONNX export ONNX Runtime runs (one inference form for every runtime),
so a difference between runtimes is the runtime's, not the graph's. int8 is NNCF post-training
quantization (`ModelType.TRANSFORMER`: SmoothQuant, attention matmuls kept fp32) calibrated on the task's
train texts; measured on this AMD CPU it can be slower than OpenVINO fp32 - bench/targets.py says.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.core.atomic import atomic_dir
from compress.core.deps import require
from compress.core.errors import CompressError, first_line
from compress.data.encoding import MODEL_INPUTS, Encoded, batches, shuffled
from compress.deploy.onnx import export
from compress.modeling.runners import Batch, Runner

INSTALL = "pip install 'compress[openvino]'"
XML = "openvino.xml"
# Dense Q, K, V as three MatMuls, each moved to head layout by a 4-D [0, 2, 1, 3] transpose: OpenVINO's CPU plugin
# folds those into its attention subgraph, where ONNX Runtime's fused QKV (one MatMul, one 5-D permute) stays a
# separate Transpose. Measured (bench/graph.py, int8, seq 128, 2 threads): the 2 x 256 student 9% faster, the
# teacher 7%, layout ops 11.0% -> 6.1% of the student's time; grouped Q/K/V stay fused (unfused: 3-4% slower).
FUSE_DENSE_QKV = False


def _ov(what: str) -> Any:
    return require("openvino", what, INSTALL)


def build(model: torch.nn.Module, folder: Path, int8: bool, calib: Callable[[], list[Batch]]) -> Path:
    """Write `model` as OpenVINO IR into `folder` (replaced whole); int8 calibrates NNCF on the batches `calib`
    draws."""
    ov = _ov("deploy target openvino")
    with atomic_dir(folder) as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export(model, onnx_path, fuse_dense_qkv=FUSE_DENSE_QKV)
        try:
            ir = _read(onnx_path)
            if int8:
                ir = _nncf_int8(ir, [_feeds(b) for b in calib()])
        except Exception as e:  # OpenVINO's frontends name the operators they cannot convert
            target = f"openvino-{'int8' if int8 else 'fp32'}"
            raise CompressError(f"deploy target {target} cannot convert {type(model).__name__}: {first_line(e)}") from e
        onnx_path.unlink()
        ov.save_model(ir, str(Path(tmp) / XML), compress_to_fp16=False)  # fp16 weights would change the fp32 target
    return folder / XML


def _read(onnx_path: Path) -> Any:
    """The ONNX file as an OpenVINO model. Not `ov.convert_model(str)`: it reads a comma in the path as a list of
    files, so an output folder named `a,b` would fail to convert."""
    return _ov("deploy target openvino").Core().read_model(str(onnx_path))


# The task head stays fp32: the pooler and a sequence classifier run on one token, so int8 buys them nothing, and
# NNCF's SmoothQuant + per-tensor scales on that one pooled vector cost accuracy where the output is a score
# (measured on STS-B, 4 x 256 student, Pearson x100 on GLUE dev: fp32 80.7, NNCF int8 with the head 78.2, without
# it 80.8; SmoothQuant alpha 0.5 instead of NNCF's 0.95 recovers 80.3). A per-token classifier is one small
# matmul per token. Graph node names are the inference form's modules (`matmul_form.EncoderForInference`).
HEAD_SCOPE = [r"/pooler/.*", r"/classifier/.*"]


def _nncf_int8(ir: Any, feeds: list[dict[str, np.ndarray]]) -> Any:
    nncf = require("nncf", "deploy target openvino-int8", INSTALL)
    names = {i.any_name for i in ir.inputs}
    data = [{k: v for k, v in f.items() if k in names} for f in feeds]
    # validate=False: a block of the latency model has no head, and the scope then matches nothing
    head = nncf.IgnoredScope(patterns=HEAD_SCOPE, validate=False)
    return nncf.quantize(
        ir, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(data), ignored_scope=head
    )


def calibration(enc: Encoded, samples: int = 128) -> list[Batch]:
    """`samples` train examples in a fixed random order, one per batch (NNCF's statistics per example)."""
    return list(batches(enc, 1, shuffled(enc, seed=0)[:samples]))


def _feeds(b: Batch) -> dict[str, np.ndarray]:
    return {k: b[k].numpy() for k in MODEL_INPUTS}


def runner(path: Path, threads: int | None = 2) -> Runner:
    """An OpenVINO CPU inference request on `path` (IR) as a runner; latency hint, `threads` inference threads."""
    ov = _ov("deploy target openvino")
    compiled = ov.Core().compile_model(str(path), "CPU", _config(threads))
    request = compiled.create_infer_request()
    names = {i.any_name for i in compiled.inputs}  # an exporter may drop an input the graph does not use
    output = compiled.output(0)

    def run(b: Batch) -> np.ndarray:
        return np.asarray(request.infer({k: v for k, v in _feeds(b).items() if k in names})[output])

    return run


def compile_block(path: Path, threads: int | None, calib: dict[str, torch.Tensor] | None = None) -> Any:
    """An ONNX block file compiled for OpenVINO CPU (the latency model's blocks); int8 when given `calib` inputs."""
    ov = _ov("deploy target openvino")
    ir = _read(path)
    if calib is not None:
        ir = _nncf_int8(ir, [{k: v.numpy() for k, v in calib.items()}])
    return ov.Core().compile_model(ir, "CPU", _config(threads))


def _config(threads: int | None) -> dict[str, Any]:
    """Latency hint, `threads` threads, and f32 for everything not quantized to int8: on CPUs with bf16 instructions
    (this AVX-512 EPYC) OpenVINO would otherwise run fp32 models in bf16 (measured 9.6e-3 logit error on the teacher),
    another precision."""
    return {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"} | (
        {"INFERENCE_NUM_THREADS": threads} if threads else {}
    )
