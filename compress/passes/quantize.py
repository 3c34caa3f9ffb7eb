"""int8 quantization of students (or any model of the run), with accuracy before/after and size on disk."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from compress.core.errors import CompressError
from compress.deploy.inc import neural_compressor_int8
from compress.deploy.onnx import export, ort_runner
from compress.deploy.quantize import onnxruntime_int8, torch_int8
from compress.modeling.runners import predict, predict_with
from compress.pipeline.registry import Pass, PassConfig
from compress.pipeline.state import RunState, Variant

log = logging.getLogger(__name__)


class Quantize(Pass):
    """int8: ONNX Runtime dynamic/static (optimum ORTQuantizer) or torch dynamic, on the MatMul inference form."""

    name = "quantize"

    class Config(PassConfig):
        backend: Literal["onnxruntime", "neural-compressor", "torch"] = "onnxruntime"
        mode: Literal["dynamic", "static"] = Field(
            "dynamic", description="onnxruntime only; static calibrates on train data"
        )
        calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
        calibration_samples: int = Field(128, description="train examples used to calibrate (static)")
        per_channel: bool = False
        models: list[str] | None = Field(None, description="default: all students")
        mode_onnx: Literal["split", "batched"] | None = Field(
            None,
            description="inference form of the grouped layers (see export); default batched, split for per_channel",
        )
        suffix: str = Field(
            "int8", pattern=r"^[A-Za-z0-9_-]+$", description="variant name <model>.<suffix>, file model.<suffix>.onnx"
        )
        eval_batch_size: PositiveInt = 64
        tolerable_loss: float = Field(
            0.01, ge=0, lt=1, description="neural-compressor: relative validation-accuracy loss allowed"
        )
        max_trials: PositiveInt = Field(10, description="neural-compressor: configurations tried at most")

        @model_validator(mode="after")
        def _per_channel_form(self):
            if self.per_channel and self.mode_onnx == "batched":
                raise ValueError(
                    "per_channel needs 2-D weights: leave mode_onnx unset or set it to split "
                    "(ONNX Runtime's int8 MatMul takes per-channel scales only for 2-D weights)"
                )
            return self

    def run(self, state: RunState, config: Config) -> RunState:
        models = state.models()
        names = state.pick(config.models or list(state.students), models, "quantize.models")
        if config.suffix == "onnx":
            raise CompressError("quantize.suffix 'onnx' is reserved for the fp32 export; use e.g. int8")
        val = state.encoded("validation")
        results = state.report(self.name)
        for name in names:
            folder = state.model_dir(name)
            fp32_acc = state.task.score(predict(models[name], val, state.device, config.eval_batch_size), val)
            if config.backend in ("onnxruntime", "neural-compressor"):
                # Quantize a fresh plain export: a graph fused by the transformer optimizer has contrib ops
                # whose types ONNX shape inference cannot see, which the quantizer needs.
                with tempfile.TemporaryDirectory(dir=state.out_dir) as tmp:
                    src = Path(tmp) / "model.onnx"
                    # batched: one 3-D MatMul per grouped layer, the fastest int8 form (bench/speed.py); per-channel
                    # scales need 2-D weights, so per_channel defaults to the per-group split form.
                    form = config.mode_onnx or ("split" if config.per_channel else "batched")
                    export(models[name], src, form)
                    models[name].config.save_pretrained(tmp)
                    dst = folder / f"model.{config.suffix}.onnx"
                    if config.backend == "onnxruntime":
                        info = onnxruntime_int8(
                            src,
                            dst,
                            static=config.mode == "static",
                            per_channel=config.per_channel,
                            calibration=config.calibration,
                            calib=state.encoded("train"),
                            samples=config.calibration_samples,
                        )
                    else:
                        val_acc = lambda p: state.task.score(
                            predict_with(ort_runner(p, state.recipe.threads), val), val
                        )
                        info = neural_compressor_int8(
                            src, dst, val_acc, tolerable_loss=config.tolerable_loss, max_trials=config.max_trials
                        )
                        log.info("%s: neural-compressor tried %s, chose %s", name, info["tried"], info["chosen"])
                    info |= {
                        "form": form,
                        "size_mb_fp32": src.stat().st_size / 2**20,
                        "size_mb_int8": dst.stat().st_size / 2**20,
                    }
                variant = Variant(name, "onnxruntime", "int8", dst)
            else:
                variant = Variant(name, "torch", "int8", module=torch_int8(models[name]))
                info = {"mode": "dynamic", "size_mb_fp32": _param_mb(models[name]), "size_mb_int8": None}
            state.variants[f"{name}.{config.suffix}"] = variant
            int8_acc = state.task.score(
                predict_with(variant.runner(state.recipe.threads), val, config.eval_batch_size), val
            )
            scores = {"metric": state.task.metric, "val_fp32": fp32_acc, "val_int8": int8_acc}
            results[f"{name}.{config.suffix}"] = info | {"backend": config.backend} | scores
            log.info(
                "%s.%s (%s %s): val %s %.4f -> %.4f",
                name,
                config.suffix,
                config.backend,
                info["mode"],
                state.task.metric,
                fp32_acc,
                int8_acc,
            )
        return state


def _param_mb(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
