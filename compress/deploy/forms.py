"""A finished run's deploy forms rebuilt from disk: what finalize times and compares, and calibration's teacher."""

from __future__ import annotations

import json
from pathlib import Path

from compress.core.atomic import atomic_write_json
from compress.core.errors import CompressError, first_line
from compress.core.records import FormEval, read_metrics
from compress.deploy.matmul_form import FORM_VERSION
from compress.deploy.targets import open_runner, target_of
from compress.modeling.loading import load_student
from compress.modeling.runners import Runner, torch_runner

# Forms added to a finished run after it ran (compress.finalize.forms: finalize builds every final student in every
# deploy form the teacher is timed in); the run's own metrics.json stays what its passes measured.
ADDED = "forms.json"


def added_forms(run: Path) -> dict[str, FormEval]:
    """The forms recorded in `<run>/forms.json` (none when absent)."""
    return read_added(run)[1]


def read_added(run: Path) -> tuple[int, dict[str, FormEval]]:
    """(the inference-form version the forms were built with, the forms) of `<run>/forms.json`; a record written
    before versions were kept (a bare mapping of forms) is version 1."""
    path = Path(run) / ADDED
    if not path.is_file():
        return FORM_VERSION, {}
    try:
        raw = json.loads(path.read_text())
        version, forms = (raw["inference_form"], raw["forms"]) if "inference_form" in raw else (1, raw)
        return int(version), {k: FormEval.model_validate(v) for k, v in forms.items()}
    except (ValueError, AttributeError, TypeError, KeyError) as e:  # bad JSON, not a mapping, records of another shape
        raise CompressError(
            f"{path}: not a record of deploy forms ({first_line(e)}); delete it and run compress finalize again "
            "(the forms are rebuilt)"
        ) from None


def write_added(run: Path, forms: dict[str, FormEval]) -> None:
    """Record `forms` in `<run>/forms.json` with the inference-form version that built them."""
    atomic_write_json(
        Path(run) / ADDED,
        {"inference_form": FORM_VERSION, "forms": {k: v.model_dump(mode="json") for k, v in forms.items()}},
    )


def evaluated_forms(run: Path, model: str) -> dict[str, FormEval]:
    """The scored forms of `model` in a finished run that can be rebuilt from disk (PyTorch weights, a deploy
    artifact): its own (metrics.json) and those added later (forms.json)."""
    added = {k: f for k, f in added_forms(run).items() if f.model == model}
    forms = read_metrics(run / "metrics.json").forms_of(model) | added
    return {k: f for k, f in forms.items() if f.splits and (_is_torch(f) or _deployed(f))}


def _is_torch(form: FormEval) -> bool:
    return form.runtime == "torch" and form.precision == "fp32"


def _deployed(form: FormEval) -> bool:
    return bool(form.path) and target_of(form.runtime, form.precision) is not None


def forms_on_disk(
    run: Path, model: str, threads: int | None, only: str | None = None
) -> dict[str, tuple[FormEval, Runner]]:
    """The forms of `evaluated_forms`, each opened as a runner; `only`: just the form of that name."""
    out = {}
    for name, form in evaluated_forms(run, model).items():
        if only is not None and name != only:
            continue
        if _is_torch(form):
            out[name] = (form, torch_runner(load_student(run / "models" / model)))
        else:
            target = target_of(form.runtime, form.precision)
            assert target is not None and form.path is not None  # evaluated_forms keeps only these
            out[name] = (form, open_runner(target, run / form.path, threads))
    return out
