"""int8 quantization: ONNX Runtime (through optimum) and torch dynamic; Intel Neural Compressor is in `inc`.

All act on the MatMul inference form (`matmul_form`), which is what makes int8 pay off for SqueezeBERT:
grouped Conv1d would become ConvInteger (slower than fp32) or be skipped (torch).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from compress.core.atomic import atomic_path
from compress.core.deps import require
from compress.core.errors import CompressError
from compress.data.encoding import MODEL_INPUTS, Encoded
from compress.deploy.matmul_form import EncoderForInference
from compress.deploy.onnx import activation_matmuls, batched_weights, is_int8

log = logging.getLogger(__name__)


def onnxruntime_int8(
    src: Path,
    dst: Path,
    *,
    static: bool,
    per_channel: bool,
    calibration: str = "minmax",
    calib: Encoded | None = None,
    samples: int = 128,
) -> dict:
    """Quantize `src` (fp32 ONNX) into `dst` with optimum's ORTQuantizer; returns what was chosen."""
    AutoQuantizationConfig = require(
        "optimum.onnxruntime.configuration", "quantize backend onnxruntime", "pip install 'optimum-onnx[onnxruntime]'"
    ).AutoQuantizationConfig
    if is_int8(src):
        raise CompressError(f"{src} is already quantized (int8 operators found); quantize the fp32 model.onnx instead")
    if per_channel and batched_weights(src):
        raise CompressError(
            "per_channel int8 needs 2-D MatMul weights (ONNX Runtime's int8 MatMul takes per-channel scales only for "
            "those): "
            "set quantize.mode_onnx: split"
        )
    # avx512_vnni: symmetric int8 weights; on CPUs without VNNI, ORT still runs it through the u8s8 path.
    qconfig = AutoQuantizationConfig.avx512_vnni(
        is_static=static, per_channel=per_channel, nodes_to_exclude=activation_matmuls(src)
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    with quiet_root_logger():  # onnxruntime's quantizer logs one INFO line per tensor on the root logger
        return _quantize(src, dst, qconfig, static, per_channel, calibration, calib, samples)


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    """WARNING and above only on the root logger, where onnxruntime's quantizer and INC's tuning log per tensor/trial;
    optimum's "could not load the config" warning is expected for graphs without a config.json (blocks)."""
    loggers = {"": logging.WARNING, "optimum": logging.ERROR}
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _quantize(
    src: Path,
    dst: Path,
    qconfig,
    static: bool,
    per_channel: bool,
    calibration: str,
    calib: Encoded | None,
    samples: int,
) -> dict:
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
                raise CompressError(
                    "static quantization needs a calibration set: set calibration_samples >= 1 (taken from the train "
                    "split)"
                )
            dataset = _calibration_dataset(calib, samples)
            method = {
                "minmax": AutoCalibrationConfig.minmax,
                "entropy": AutoCalibrationConfig.entropy,
                "percentile": AutoCalibrationConfig.percentiles,
            }[calibration]
            ranges = quantizer.fit(
                dataset=dataset,
                calibration_config=method(dataset),
                operators_to_quantize=qconfig.operators_to_quantize,
                onnx_augmented_model_name=work / "augmented.onnx",
            )
        out = quantizer.quantize(save_dir=work / "out", quantization_config=qconfig, calibration_tensors_range=ranges)
        produced = next(Path(out).glob("*.onnx"))
        with atomic_path(dst) as tmp_dst:
            shutil.move(produced, tmp_dst)
    return {
        "mode": "static" if static else "dynamic",
        "per_channel": per_channel,
        "calibration": calibration if static else None,
        "operators": list(qconfig.operators_to_quantize),
    }


def _calibration_dataset(enc: Encoded, samples: int):
    from datasets import Dataset

    n = min(samples, len(enc))
    rows: dict[str, list[Any]] = {k: [] for k in MODEL_INPUTS}
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
        # torch.ao.quantization is deprecated in favour of torchao; it still works on CPU
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(form, {torch.nn.Linear}, dtype=torch.qint8)
