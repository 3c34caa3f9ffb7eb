"""Every final student and baseline in every deploy form the teacher is timed in, before the final timing run.

A study scores its trials in one target (`search.target`), so a final run builds just that form. But the teacher is
timed in all of its forms and every speed-up is against the fastest of them; a student compared in one form only is
handicapped wherever another runtime suits it better (measured on the frontier benchmark's machine: every final
student ran 24-47% faster in OpenVINO NNCF int8 than in the ONNX Runtime int8 target; which runtime wins moves with
the CPU and the model). So finalize builds each missing form from the run's saved model,
scores it on the run's evaluation splits, and the timing run picks each model's fastest form, as it does the
teacher's.

The forms added are recorded in `<run>/forms.json` (FormEval records, the same as `metrics.json` holds); the run's
own `metrics.json` stays what its passes measured. Artifacts go where the export and quantize passes put them
(`models/<model>/openvino-int8/...`); a file already there is reused.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml

from compress.core.records import FormEval, SplitScores, read_metrics
from compress.data.encoding import Encoded
from compress.data.sources import load_task
from compress.data.splits import encode_split
from compress.deploy import openvino
from compress.deploy.forms import ADDED, added_forms, evaluated_forms, read_added, write_added
from compress.deploy.matmul_form import FORM_VERSION
from compress.deploy.targets import Target, build, form_name, open_runner, target_of
from compress.modeling.loading import load_student, load_tokenizer
from compress.modeling.runners import predict_with, torch_runner
from compress.recipe import parse_recipe

log = logging.getLogger(__name__)


def missing_targets(run: Path, model: str, targets: list[Target]) -> list[Target]:
    """The `targets` in which `model` of the finished `run` has no scored form yet (its own or added)."""
    have = {(f.runtime, f.precision) for f in evaluated_forms(run, model).values()}
    return [t for t in targets if (t.runtime, t.precision) not in have]


def add_forms(run: Path, model: str, targets: list[Target], threads: int | None) -> list[str]:
    """Build `model` of the finished `run` in each of `targets` it lacks, score each form on the splits its run
    evaluated (the run's own recipe: same task, same seed), and record them in `<run>/forms.json`.
    Returns the names of the forms added (empty: nothing was missing)."""
    _drop_stale(run)
    todo = missing_targets(run, model, targets)
    if not todo:
        return []
    recipe = parse_recipe(yaml.safe_load((run / "recipe.yaml").read_text()), f"{run}/recipe.yaml")
    folder = run / "models" / model
    student = load_student(folder).eval()
    task = load_task(recipe.task, recipe.seed)
    tokenizer = load_tokenizer(str(folder))
    splits = _evaluated_splits(run, model)
    encoded: dict[str, Encoded] = {}

    def enc(split: str) -> Encoded:
        if split not in encoded:
            encoded[split] = encode_split(task, recipe.task, tokenizer, split, recipe.cache_path())
        return encoded[split]

    added = added_forms(run)
    for target in todo:
        name = form_name(model, target)
        if target.runtime == "torch":
            runner, path = torch_runner(student), None
        else:
            path = folder / target.artifact
            if not path.is_file():
                build(student, target, path, lambda: openvino.calibration(enc("train")))
            runner = open_runner(target, path, threads)
        scores: dict[str, SplitScores] = {
            s: task.kind.scores(predict_with(runner, enc(s)), enc(s), task.labels, seed=recipe.seed) for s in splits
        }
        added[name] = FormEval(
            form=name,
            model=model,
            runtime=target.runtime,
            precision=target.precision,
            path=str(path.relative_to(run)) if path else None,
            size_mb=path.stat().st_size / 2**20 if path else None,
            splits=scores,
        )
        shown = ", ".join(f"{s} {v[task.metric]:.4f}" for s, v in scores.items())
        log.info("%s: %s added for the final timing run (%s)", run.name, name, shown)
        write_added(run, added)
    return [form_name(model, t) for t in todo]


def _drop_stale(run: Path) -> None:
    """Forms added by a compress whose exporter wrote other graphs (an older `matmul_form.FORM_VERSION`): their
    artifacts and records go, so they are rebuilt and timed as this compress would ship them."""
    version, added = read_added(run)
    if version == FORM_VERSION or not added:
        return
    for form in added.values():
        target = target_of(form.runtime, form.precision)
        if form.path and target is not None and target.artifact:
            path = run / form.path
            if "/" in target.artifact:  # a folder of its own (OpenVINO's xml and bin)
                shutil.rmtree(path.parent, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    (run / ADDED).unlink()
    log.info("%s: %d added form(s) were built by an older inference form; rebuilding them", run.name, len(added))


def _evaluated_splits(run: Path, model: str) -> list[str]:
    """The splits the run scored `model`'s forms on (validation and test when it evaluated none)."""
    forms = read_metrics(run / "metrics.json").forms_of(model).values()
    found = list(dict.fromkeys(s for f in forms for s in f.splits))
    return found or ["validation", "test"]


def teacher_targets(reference: Path) -> list[Target]:
    """The deploy targets of the teacher's timed forms in the study's reference run."""
    forms = read_metrics(reference / "metrics.json").forms_of("teacher").values()
    found = [target_of(f.runtime, f.precision) for f in forms if f.latency is not None]
    return list(dict.fromkeys(t for t in found if t is not None))
