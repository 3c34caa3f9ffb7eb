"""int8 quantization backends: ONNX Runtime (through optimum), Intel Neural Compressor (accuracy-aware), torch dynamic.

Both act on the MatMul inference form (compress/inference.py), which is what makes int8 pay off for
SqueezeBERT: grouped Conv1d would become ConvInteger (slower than fp32) or be skipped (torch).
"""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from compress.encoding import Encoded
from compress.errors import CompressError
from compress.inference import EncoderForInference
from compress.runtime import INPUTS, is_int8

log = logging.getLogger(__name__)


def onnxruntime_int8(
    src: Path, dst: Path, *, static: bool, per_channel: bool, calibration: str = "minmax", calib: Encoded | None = None, samples: int = 128
) -> dict:
    """Quantize `src` (fp32 ONNX) into `dst` with optimum's ORTQuantizer; returns what was chosen."""
    AutoQuantizationConfig = _require("optimum.onnxruntime.configuration", "optimum-onnx[onnxruntime]").AutoQuantizationConfig
    if is_int8(src):
        raise CompressError(f"{src} is already quantized (int8 operators found); quantize the fp32 model.onnx instead")
    if per_channel and batched_weights(src):
        raise CompressError("per_channel int8 needs 2-D MatMul weights (ONNX Runtime's int8 MatMul takes per-channel scales only for those): "
                            "set quantize.mode_onnx: split")
    # avx512_vnni: symmetric int8 weights; on CPUs without VNNI, ORT still runs it through the u8s8 path.
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=static, per_channel=per_channel, nodes_to_exclude=activation_matmuls(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with quiet_root_logger():  # onnxruntime's quantizer logs one INFO line per tensor on the root logger
        return _quantize(src, dst, qconfig, static, per_channel, calibration, calib, samples)


@contextmanager
def quiet_root_logger():
    """WARNING and above only on the root logger, where onnxruntime's quantizer and INC's tuning log per tensor/trial."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)


def activation_matmuls(path: Path) -> list[str]:
    """MatMul nodes whose both inputs are activations (attention's Q.K^T and P.V).

    optimum / onnxruntime quantize them too (both sides quantized on the fly); measured on the 4/4/4/1/4/4
    student that made each ~25% slower than its fp32 FusedMatMul and the int8 model 1.13x slower overall,
    so they stay fp32 (the same choice as onnxruntime's MatMulConstBOnly option, which optimum does not pass on).
    """
    graph = _graph(path)
    weights = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "MatMul" and not any(i in weights for i in n.input)]


def batched_weights(path: Path) -> bool:
    """True if some MatMul weight is 3-D (the batched form of a grouped layer)."""
    graph = _graph(path)
    dims = {i.name: len(i.dims) for i in graph.initializer}
    return any(dims.get(i, 0) == 3 for n in graph.node if n.op_type == "MatMul" for i in n.input)


def _graph(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False).graph


def _require(module: str, package: str):
    """Import an optional backend, or say exactly what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise CompressError(f"this quantization backend needs {package}, which is not installed: pip install '{package}'") from e


def _quantize(src: Path, dst: Path, qconfig, static: bool, per_channel: bool, calibration: str, calib: Encoded | None, samples: int) -> dict:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoCalibrationConfig

    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        work = Path(tmp)
        shutil.copy(src, work / "model.onnx")
        if (src.parent / "config.json").exists():
            shutil.copy(src.parent / "config.json", work / "config.json")
        quantizer = ORTQuantizer.from_pretrained(work, file_name="model.onnx")
        ranges = None
        if static:
            if calib is None or len(calib) == 0 or samples < 1:
                raise CompressError("static quantization needs a calibration set: set calibration_samples >= 1 (taken from the train split)")
            dataset = _calibration_dataset(calib, samples)
            method = {"minmax": AutoCalibrationConfig.minmax, "entropy": AutoCalibrationConfig.entropy, "percentile": AutoCalibrationConfig.percentiles}[calibration]
            ranges = quantizer.fit(dataset=dataset, calibration_config=method(dataset), operators_to_quantize=qconfig.operators_to_quantize,
                                   onnx_augmented_model_name=work / "augmented.onnx")
        out = quantizer.quantize(save_dir=work / "out", quantization_config=qconfig, calibration_tensors_range=ranges)
        produced = next(Path(out).glob("*.onnx"))
        shutil.move(produced, dst)
    return {"mode": "static" if static else "dynamic", "per_channel": per_channel, "calibration": calibration if static else None,
            "operators": list(qconfig.operators_to_quantize)}


def _calibration_dataset(enc: Encoded, samples: int):
    from datasets import Dataset

    n = min(samples, len(enc))
    rows = {k: [] for k in INPUTS}
    for i in range(n):
        s, e = int(enc.offsets[i]), int(enc.offsets[i + 1])
        rows["input_ids"].append(enc.input_ids[s:e].astype("int64").tolist())
        rows["attention_mask"].append([1] * (e - s))
        rows["token_type_ids"].append(enc.token_type_ids[s:e].astype("int64").tolist())
    return Dataset.from_dict(rows)


def torch_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 of every Linear in the inference form (its per-group Linears included)."""
    form = EncoderForInference(model.cpu().eval(), mode="split")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao; it still works on CPU
        return torch.ao.quantization.quantize_dynamic(form, {torch.nn.Linear}, dtype=torch.qint8)


# onnx-neural-compressor pins numpy<2, which pandas 3 refuses; it runs fine with numpy 2, so it is installed
# without its pins (the Makefile does this).
INC_INSTALL = "pip install --no-deps onnx-neural-compressor==1.0 onnxruntime-extensions py-cpuinfo psutil prettytable wcwidth"


def neural_compressor_int8(src: Path, dst: Path, evaluate, *, tolerable_loss: float, max_trials: int) -> dict:
    """Accuracy-aware int8 with Intel Neural Compressor (ONNX Runtime flavour): `autotune` walks dynamic int8
    configurations (per-tensor weights; then per-channel, on a graph of 2-D weights only; each with and without
    the last MatMul, the classifier, kept fp32) and keeps the first whose `evaluate(path)` (validation accuracy)
    is within `tolerable_loss` (relative) of the fp32 model's; returns what it tried and chose."""
    try:
        tuning = importlib.import_module("onnx_neural_compressor.quantization.tuning")
        qconfig = importlib.import_module("onnx_neural_compressor.quantization.config")
    except ImportError as e:
        raise CompressError(f"quantize backend neural-compressor needs onnx-neural-compressor, which is not installed: {INC_INSTALL}") from e
    import onnx

    if is_int8(src):
        raise CompressError(f"{src} is already quantized (int8 operators found); quantize the fp32 model.onnx instead")
    per_channel = [False] if batched_weights(src) else [False, True]  # per-channel scales need 2-D weights (see onnxruntime_int8)
    space = qconfig.DynamicQuantConfig(per_channel=per_channel, quant_last_matmul=[True, False], nodes_to_exclude=activation_matmuls(src))
    candidates = [{"per_channel": c.per_channel, "quant_last_matmul": c.quant_last_matmul, "weight_type": str(c.weight_type).split(".")[-1]}
                  for c in space.expand()]
    scores: list[float] = []

    def eval_fn(path: str) -> float:
        scores.append(float(evaluate(Path(path))))
        return scores[-1]

    with quiet_root_logger():
        best = tuning.autotune(str(src), tuning.TuningConfig(config_set=space, tolerable_loss=tolerable_loss, max_trials=max_trials), eval_fn)
    tried = [{"config": candidates[i], "val_accuracy": s} for i, s in enumerate(scores[1:])]
    if best is None:
        raise CompressError(f"neural-compressor found no int8 configuration within tolerable_loss={tolerable_loss} of fp32 accuracy {scores[0]:.4f} "
                            f"(tried {[t['val_accuracy'] for t in tried]}); raise tolerable_loss or use backend onnxruntime")
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(best, str(dst))
    return {"mode": "dynamic (accuracy-aware tuning)", "tolerable_loss": tolerable_loss, "fp32_val_accuracy": scores[0],
            "tried": tried, "chosen": tried[-1]["config"] if tried else None}
