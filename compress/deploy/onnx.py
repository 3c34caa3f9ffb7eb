"""ONNX: export of the MatMul inference form, ONNX Runtime sessions and runners, and reading graphs."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.core.atomic import atomic_path
from compress.core.errors import CompressError, first_line
from compress.data.encoding import MODEL_INPUTS, Encoded, batches, by_length, placeholder_inputs
from compress.deploy.matmul_form import EncoderForInference, inference_form
from compress.modeling.heads import logits_of
from compress.modeling.runners import Batch, Runner

log = logging.getLogger(__name__)
INT8_OPS = {
    "DynamicQuantizeLinear",
    "QuantizeLinear",
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "QLinearMatMul",
    "ConvInteger",
}


def export(
    model: torch.nn.Module, path: Path, mode: str = "batched", opset: int = 17, fuse_dense_qkv: bool = True
) -> EncoderForInference:
    """Write `model` (BERT or SqueezeBERT with a sequence or token head) as ONNX with dynamic batch and sequence
    axes (`fuse_dense_qkv`: see `matmul_form.Layer`)."""
    form = inference_form(model, mode, fuse_dense_qkv)
    dummy = placeholder_inputs(2, 8)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: the dynamo one needs onnxscript and gains nothing for this static graph.
        torch.onnx.export(
            form,
            dummy,
            str(tmp),
            input_names=list(MODEL_INPUTS),
            output_names=["logits"],
            opset_version=opset,
            dynamo=False,
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in MODEL_INPUTS}
            | {"logits": {0: "batch", 1: "sequence"} if form.per_token else {0: "batch"}},
        )
    return form


def optimize(path: Path, config: Any) -> dict[str, int]:
    """Fuse transformer patterns in place (onnxruntime.transformers.optimizer: attention, skip-LayerNorm,
    bias-GELU, embedding-LayerNorm) - the graph-level optimizations ORT's session options do not do."""
    from onnxruntime.transformers import optimizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = optimizer.optimize_model(
            str(path),
            model_type="bert",
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
            opt_level=1,
        )
    with atomic_path(path) as tmp:
        opt.save_model_to_file(str(tmp))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


def session(path: Path, threads: int | None = 2) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Workers spin between the operators of one run (ORT's default; turning it off measured 1.3-1.5x slower
    # here: every parallel operator then waits for a sleeping thread to wake) but stop spinning when the run
    # returns. Left spinning after a run they kept both cores busy for tens of ms, which made the *next*
    # runner timed interleaved (a PyTorch model, another session) up to 2x slower.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        raise CompressError(f"{path}: ONNX Runtime cannot load it ({first_line(e)}); re-export the model") from e


def ort_mobile(src: Path, dst: Path) -> Path:
    """`src` in ONNX Runtime's mobile format (.ort), as onnxruntime's convert_onnx_models_to_ort writes it: basic
    graph optimizations only (the extended ones insert operators of this CPU's build), so ARM builds run it."""
    import onnxruntime as ort

    with atomic_path(dst, ".ort") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(tmp)
        opts.add_session_config_entry("session.save_model_format", "ORT")
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    return dst


def ort_runner(path: Path, threads: int | None = 2) -> Runner:
    """An ONNX Runtime session as a runner (padded batch -> logits)."""
    sess = session(path, threads)

    def run(b: Batch) -> np.ndarray:
        return sess.run(["logits"], {k: b[k].numpy() for k in MODEL_INPUTS})[0]

    return run


def max_abs_diff(model: torch.nn.Module, run: Runner, enc: Encoded, n: int = 64) -> float:
    """Largest |logit| difference between PyTorch and another runner on real examples."""
    b = next(batches(enc, min(n, len(enc)), by_length(enc)))
    with torch.no_grad():
        ref = logits_of(model.cpu().eval()(*(b[k] for k in MODEL_INPUTS))).numpy()
    return float(np.abs(ref - run(b)).max())


def graph(path: Path) -> Any:
    """The graph of an ONNX file (weights left on disk)."""
    import onnx

    return onnx.load(str(path), load_external_data=False).graph


def is_int8(path: Path) -> bool:
    """True if the graph already holds quantized operators."""
    return any(node.op_type in INT8_OPS for node in graph(path).node)


def activation_matmuls(path: Path) -> list[str]:
    """MatMul nodes whose both inputs are activations (attention's Q.K^T and P.V).

    optimum / onnxruntime quantize them too (both sides quantized on the fly); measured on the 4/4/4/1/4/4
    student that made each ~25% slower than its fp32 FusedMatMul and the int8 model 1.13x slower overall,
    so they stay fp32 (the same choice as onnxruntime's MatMulConstBOnly option, which optimum does not pass on).
    """
    g = graph(path)
    weights = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in g.node if n.op_type == "MatMul" and not any(i in weights for i in n.input)]


def batched_weights(path: Path) -> bool:
    """True if some MatMul weight is 3-D (the batched form of a grouped layer)."""
    g = graph(path)
    dims = {i.name: len(i.dims) for i in g.initializer}
    return any(dims.get(i, 0) == 3 for n in g.node if n.op_type == "MatMul" for i in n.input)
