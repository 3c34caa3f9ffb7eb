"""A finished run's deploy forms rebuilt from disk: what finalize times and compares, and calibration's teacher."""

from __future__ import annotations

from pathlib import Path

from compress.core.records import FormEval, read_metrics
from compress.deploy.targets import open_runner, target_of
from compress.modeling.loading import load_student
from compress.modeling.runners import Runner, torch_runner


def forms_on_disk(
    run: Path, model: str, threads: int | None, only: str | None = None
) -> dict[str, tuple[FormEval, Runner]]:
    """The evaluated forms of `model` in a finished run that can be rebuilt from disk (PyTorch weights, deploy
    artifacts); `only`: just the form of that name."""
    out = {}
    for name, form in read_metrics(run / "metrics.json").forms_of(model).items():
        if not form.splits or (only is not None and name != only):
            continue
        if form.runtime == "torch" and form.precision == "fp32":
            out[name] = (form, torch_runner(load_student(run / "models" / model)))
        elif form.path and (target := target_of(form.runtime, form.precision)) is not None:
            out[name] = (form, open_runner(target, run / form.path, threads))
    return out
