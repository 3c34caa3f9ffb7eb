"""ONNX export of the inference form, ONNX Runtime sessions, and predictions on task data."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from compress.encoding import Encoded, batches, by_length
from compress.errors import CompressError
from compress.inference import EncoderForInference

log = logging.getLogger(__name__)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export(model: torch.nn.Module, path: Path, mode: str = "batched", opset: int = 17) -> EncoderForInference:
    """Write `model` (BERT or SqueezeBERT classifier) as ONNX with dynamic batch and sequence axes."""
    try:
        form = EncoderForInference(model.cpu().eval(), mode)
    except ValueError as e:
        raise CompressError(f"cannot export: {e}; export supports BERT and SqueezeBERT classifiers") from e
    dummy = tuple(torch.ones(2, 8, dtype=torch.long) if n != "token_type_ids" else torch.zeros(2, 8, dtype=torch.long) for n in INPUTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: the dynamo one needs onnxscript and gains nothing for this static graph.
        torch.onnx.export(
            form, dummy, str(tmp), input_names=list(INPUTS), output_names=["logits"], opset_version=opset, dynamo=False,
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in INPUTS} | {"logits": {0: "batch"}},
        )
    tmp.replace(path)
    return form


def optimize(path: Path, config) -> dict[str, int]:
    """Fuse transformer patterns in place (onnxruntime.transformers.optimizer: attention, skip-LayerNorm,
    bias-GELU, embedding-LayerNorm) - the graph-level optimizations ORT's session options do not do."""
    from onnxruntime.transformers import optimizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = optimizer.optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size, opt_level=1)
    tmp = path.with_name(f".{path.name}.opt")
    opt.save_model_to_file(str(tmp))
    tmp.replace(path)
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


def session(path: Path, threads: int | None = 2):
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
        raise CompressError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]}); re-export the model") from e


def max_abs_diff(model: torch.nn.Module, sess, enc: Encoded, n: int = 64) -> float:
    """Largest |logit| difference between PyTorch and ONNX Runtime on real examples."""
    b = next(batches(enc, min(n, len(enc)), by_length(enc)))
    with torch.no_grad():
        ref = model.cpu().eval()(**{k: b[k] for k in INPUTS}).logits.numpy()
    got = sess.run(["logits"], {k: b[k].numpy() for k in INPUTS})[0]
    return float(np.abs(ref - got).max())


def is_int8(path: Path) -> bool:
    """True if the graph already holds quantized operators."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(node.op_type in {"DynamicQuantizeLinear", "QuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "ConvInteger"} for node in model.graph.node)
