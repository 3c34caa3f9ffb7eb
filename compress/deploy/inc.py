"""Accuracy-aware int8 with Intel Neural Compressor's ONNX Runtime flavour (onnx-neural-compressor).

onnx-neural-compressor pins numpy<2, which pandas 3 refuses; it runs fine with numpy 2, so it is installed
without its pins (the Makefile does this, and INC_INSTALL says how).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from compress.core.atomic import atomic_path
from compress.core.deps import require
from compress.core.errors import CompressError
from compress.deploy.onnx import activation_matmuls, batched_weights, is_int8
from compress.deploy.quantize import quiet_root_logger

INC_INSTALL = (
    "pip install --no-deps onnx-neural-compressor==1.0 onnxruntime-extensions py-cpuinfo psutil prettytable wcwidth"
)


def neural_compressor_int8(
    src: Path, dst: Path, evaluate: Callable[[Path], float], *, tolerable_loss: float, max_trials: int
) -> dict:
    """Accuracy-aware int8 with Intel Neural Compressor (ONNX Runtime flavour): `autotune` walks dynamic int8
    configurations (per-tensor weights; then per-channel, on a graph of 2-D weights only; each with and without
    the last MatMul, the classifier, kept fp32) and keeps the first whose `evaluate(path)` (validation accuracy)
    is within `tolerable_loss` (relative) of the fp32 model's; returns what it tried and chose."""
    tuning = require("onnx_neural_compressor.quantization.tuning", "quantize backend neural-compressor", INC_INSTALL)
    qconfig = require("onnx_neural_compressor.quantization.config", "quantize backend neural-compressor", INC_INSTALL)
    import onnx

    if is_int8(src):
        raise CompressError(f"{src} is already quantized (int8 operators found); quantize the fp32 model.onnx instead")
    # per-channel scales need 2-D weights (see onnxruntime_int8)
    per_channel = [False] if batched_weights(src) else [False, True]
    space = qconfig.DynamicQuantConfig(
        per_channel=per_channel, quant_last_matmul=[True, False], nodes_to_exclude=activation_matmuls(src)
    )
    candidates = [
        {
            "per_channel": c.per_channel,
            "quant_last_matmul": c.quant_last_matmul,
            "weight_type": str(c.weight_type).split(".")[-1],
        }
        for c in space.expand()
    ]
    scores: list[float] = []

    def eval_fn(path: str) -> float:
        scores.append(float(evaluate(Path(path))))
        return scores[-1]

    with quiet_root_logger():
        best = tuning.autotune(
            str(src),
            tuning.TuningConfig(config_set=space, tolerable_loss=tolerable_loss, max_trials=max_trials),
            eval_fn,
        )
    tried = [{"config": candidates[i], "val_accuracy": s} for i, s in enumerate(scores[1:])]
    if best is None:
        raise CompressError(
            f"neural-compressor found no int8 configuration within tolerable_loss={tolerable_loss} of fp32 accuracy "
            f"{scores[0]:.4f} "
            f"(tried {[t['val_accuracy'] for t in tried]}); raise tolerable_loss or use backend onnxruntime"
        )
    with atomic_path(dst) as tmp:
        onnx.save(best, str(tmp))
    return {
        "mode": "dynamic (accuracy-aware tuning)",
        "tolerable_loss": tolerable_loss,
        "fp32_val_accuracy": scores[0],
        "tried": tried,
        "chosen": tried[-1]["config"] if tried else None,
    }
