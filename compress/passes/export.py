"""Export models to ONNX in the MatMul inference form, verified against PyTorch."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from compress.core.errors import CompressError
from compress.deploy.onnx import export, max_abs_diff, optimize, ort_runner
from compress.pipeline.registry import Pass, PassConfig
from compress.pipeline.state import RunState, Variant

log = logging.getLogger(__name__)


class Export(Pass):
    """ONNX export (dynamic batch/sequence axes) of the teacher and students, checked against PyTorch."""

    name = "export"

    class Config(PassConfig):
        models: list[str] | None = Field(None, description="default: teacher and all students")
        # Measured (bench/speed.py, 2 threads): the batched form is as fast as per-group MatMuls for SqueezeBERT-base
        # fp32 (27.9 vs 27.3 ms) and faster for the small 4/4/4/1/4/4 student (5.4 vs 6.4 ms), and is the int8 form.
        mode: Literal["split", "batched"] = Field("batched", description="grouped 1x1 conv as one batched MatMul or per-group MatMuls")
        opset: int = Field(17, ge=14, le=21)
        # Measured (bench/speed.py): ORT's session-level optimizations already make the plain graph faster than
        # the transformer optimizer's fused one, and int8 quantization needs the plain graph; so off by default.
        optimize: bool = Field(False, description="fuse attention / LayerNorm / GELU with ONNX Runtime's transformer optimizer")
        tolerance: float = Field(1e-3, gt=0, description="max |logit diff| vs PyTorch before the export is rejected")

    def run(self, state: RunState, config: Config) -> RunState:
        # optimum's exporter would emit SqueezeBERT's grouped Conv1d, whose int8 form (ConvInteger) is slower
        # than fp32; we export our own inference form (compress/deploy/matmul_form.py) for teacher and students alike.
        models = state.models()
        names = state.pick(config.models, models, "export.models")
        results = state.report(self.name)
        for name in names:
            path = state.model_dir(name) / "model.onnx"
            export(models[name], path, config.mode, config.opset)
            fused = optimize(path, models[name].config) if config.optimize else {}
            diff = max_abs_diff(models[name], ort_runner(path), state.encoded("validation"))
            if diff > config.tolerance:
                path.unlink()
                raise CompressError(
                    f"ONNX export of {name} differs from PyTorch by {diff:.2e} > tolerance {config.tolerance}; report this model config"
                )
            models[name].config.save_pretrained(path.parent)  # optimum's quantizer reads the config beside the graph
            state.variants[f"{name}.onnx"] = Variant(name, "onnxruntime", "fp32", path)
            results[name] = {
                "path": str(path.relative_to(state.out_dir)),
                "max_abs_diff": diff,
                "size_mb": path.stat().st_size / 2**20,
                "mode": config.mode,
                "fused": fused,
            }
            log.info("exported %s: max |logit diff| vs PyTorch %.2e, %.1f MB", name, diff, results[name]["size_mb"])
        return state
