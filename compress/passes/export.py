"""Export models to their deploy targets, each verified against PyTorch on validation examples.

onnx        model.onnx (ONNX Runtime; the quantize pass makes its int8 form)
ort-mobile  model.ort (+ model.int8.ort): ONNX Runtime's mobile format, basic optimizations only so it
            stays portable to ARM builds of the runtime
openvino    openvino/openvino.xml (+ openvino-int8/: NNCF, calibrated on train)      extra compress[openvino]
executorch  model.pte (+ model.int8.pte: PT2E dynamic int8), XNNPACK delegate       extra compress[executorch]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from compress.core.errors import CompressError
from compress.deploy import openvino
from compress.deploy.onnx import export, max_abs_diff, optimize, ort_mobile, ort_runner
from compress.deploy.targets import TARGETS, Target, build, check_installed, open_runner
from compress.pipeline.registry import Pass, PassConfig
from compress.pipeline.state import RunState, Variant

log = logging.getLogger(__name__)


class Export(Pass):
    """Export (dynamic batch and sequence) of the teacher and students to each target, checked against PyTorch."""

    name = "export"

    class Config(PassConfig):
        models: list[str] | None = Field(None, description="default: teacher and all students")
        # Measured (bench/speed.py, 2 threads): the batched form is as fast as per-group MatMuls for SqueezeBERT-base
        # fp32 (27.9 vs 27.3 ms) and faster for the small 4/4/4/1/4/4 student (5.4 vs 6.4 ms), and is the int8 form.
        mode: Literal["split", "batched"] = Field(
            "batched", description="grouped 1x1 conv as one batched MatMul or per-group MatMuls"
        )
        opset: int = Field(17, ge=14, le=21)
        # Measured (bench/speed.py): ORT's session-level optimizations already make the plain graph faster than
        # the transformer optimizer's fused one, and int8 quantization needs the plain graph; so off by default.
        optimize: bool = Field(
            False, description="fuse attention / LayerNorm / GELU with ONNX Runtime's transformer optimizer"
        )
        tolerance: float = Field(
            1e-3, gt=0, description="max |logit diff| vs PyTorch before an fp32 export is rejected"
        )
        targets: list[Literal["onnx", "ort-mobile", "openvino", "executorch"]] = Field(
            ["onnx"],
            min_length=1,
            description=(
                "what to write: ONNX (always written when another target needs it), ORT mobile, OpenVINO, ExecuTorch"
            ),
        )
        int8: bool = Field(
            False,
            description=(
                "also the int8 form of ort-mobile, openvino (NNCF) and executorch (PT2E); ONNX int8 is the "
                "quantize pass"
            ),
        )
        calibration_samples: int = Field(128, ge=1, description="train examples NNCF calibrates OpenVINO int8 on")

        @field_validator("targets")
        @classmethod
        def _installed(cls, targets: list[str]) -> list[str]:
            for t in targets:
                check_installed(t)
            return targets

    def run(self, state: RunState, config: Config) -> RunState:
        # optimum's exporter would emit SqueezeBERT's grouped Conv1d, whose int8 form (ConvInteger) is slower
        # than fp32; we export our own inference form (compress/deploy/matmul_form.py) for teacher and students alike.
        models = state.models()
        names = state.pick(config.models, models, "export.models")
        results = state.report(self.name)
        val = state.encoded("validation")
        for name in names:
            path = state.model_dir(name) / "model.onnx"
            export(models[name], path, config.mode, config.opset)
            fused = optimize(path, models[name].config) if config.optimize else {}
            diff = max_abs_diff(models[name], ort_runner(path), val)
            if diff > config.tolerance:
                path.unlink()
                raise CompressError(
                    f"ONNX export of {name} differs from PyTorch by {diff:.2e} > tolerance {config.tolerance}; "
                    "report this model config"
                )
            models[name].config.save_pretrained(path.parent)  # optimum's quantizer reads the config beside the graph
            state.variants[f"{name}.onnx"] = Variant(name, "onnxruntime", "fp32", path)
            results[name] = {
                "path": str(path.relative_to(state.out_dir)),
                "max_abs_diff": diff,
                "size_mb": path.stat().st_size / 2**20,
                "mode": config.mode,
                "fused": fused,
                "targets": {},
            }
            log.info("exported %s: max |logit diff| vs PyTorch %.2e, %.1f MB", name, diff, results[name]["size_mb"])
            for kind in config.targets:
                if kind == "ort-mobile":
                    results[name]["targets"] |= self._ort_mobile(state, config, name, path)
                elif kind != "onnx":
                    results[name]["targets"] |= self._target(state, config, name, kind)
        return state

    def _target(self, state: RunState, config: Config, name: str, runtime: str) -> dict[str, dict]:
        """`name` built in the runtime's fp32 (and int8) targets, registered as variants, checked against PyTorch."""
        model, out = state.models()[name], {}
        for target in [t for t in TARGETS.values() if t.runtime == runtime and (t.precision == "fp32" or config.int8)]:
            calib = lambda: openvino.calibration(state.encoded("train"), config.calibration_samples)
            path = build(model, target, state.model_dir(name) / target.artifact, calib)
            assert path is not None
            out[target.name] = self._check(state, config, name, target, path)
            state.variants[f"{name}.{target.suffix}"] = Variant(name, target.runtime, target.precision, path)
        return out

    def _ort_mobile(self, state: RunState, config: Config, name: str, onnx_path: Path) -> dict[str, dict]:
        """model.ort (and model.int8.ort): ONNX Runtime's mobile format of the fp32 (and dynamic int8) graph."""
        out = {
            "ort-mobile-fp32": self._check(
                state, config, name, TARGETS["onnxruntime-fp32"], ort_mobile(onnx_path, onnx_path.with_suffix(".ort"))
            )
        }
        if config.int8:
            int8 = build(state.models()[name], TARGETS["onnxruntime-int8"], onnx_path.parent / "model.int8.onnx")
            assert int8 is not None
            out["ort-mobile-int8"] = self._check(
                state, config, name, TARGETS["onnxruntime-int8"], ort_mobile(int8, onnx_path.parent / "model.int8.ort")
            )
        return out

    def _check(self, state: RunState, config: Config, name: str, target: Target, path: Path) -> dict:
        """max |logit diff| against PyTorch; an fp32 artifact beyond tolerance is removed and refused."""
        diff = max_abs_diff(
            state.models()[name], open_runner(target, path, state.recipe.threads), state.encoded("validation")
        )
        if target.precision == "fp32" and diff > config.tolerance:
            path.unlink()
            raise CompressError(
                f"{path.name} of {name} differs from PyTorch by {diff:.2e} > tolerance {config.tolerance}; report "
                "this model config"
            )
        size = (
            sum(f.stat().st_size for f in path.parent.iterdir())
            if target.runtime == "openvino"
            else path.stat().st_size
        )
        log.info(
            "%s %s (%s): max |logit diff| vs PyTorch %.2e, %.1f MB", name, path.name, target.name, diff, size / 2**20
        )
        return {"path": str(path.relative_to(state.out_dir)), "max_abs_diff": diff, "size_mb": size / 2**20}
