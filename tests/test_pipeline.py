"""End to end through the CLI on tiny models: results layout, determinism, failures, user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from transformers import DistilBertConfig, DistilBertModel, SqueezeBertForSequenceClassification

from compress.core.records import SCHEMA_VERSION, read_metrics
from conftest import tiny_recipe

FULL = [
    {"name": "finetune_teacher", "options": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "cache": False}},
    {"name": "convert", "options": {"groups": "2,2,2,1,2,2", "layers": 1}},
    {"name": "distill", "options": {"epochs": 1, "batch_size": 16, "lr": 1e-3}},
    {"name": "evaluate"},
]


def _write(tmp_path: Path, recipe: dict, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.integration
def test_full_recipe_writes_complete_results(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    code, _out, err = cli("run", _write(tmp_path, tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, FULL)))
    assert code == 0, err
    run = tmp_path / "results" / "tiny"
    metrics = read_metrics(run / "metrics.json")
    assert json.loads((run / "metrics.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert metrics.status == "complete" and [p.name for p in metrics.passes] == [
        "finetune_teacher",
        "convert",
        "distill",
        "evaluate",
    ]
    for model in ("teacher", "student"):
        for split in ("validation", "test"):
            r = metrics.evaluations[model].splits[split]
            assert 0 <= r.ci95["accuracy"][0] <= r["accuracy"] <= r.ci95["accuracy"][1] <= 1 and r.n > 0
    assert metrics.conversions["student"].teacher_layers == [1] and metrics.conversions["student"].groups["q"] == 2
    student = SqueezeBertForSequenceClassification.from_pretrained(run / "models" / "student")
    assert student.config.q_groups == 2 and (run / "models" / "student" / "tokenizer.json").exists()
    assert (run / "recipe.yaml").exists() and (run / "run.log").read_text()
    assert not (tmp_path / "results" / "tiny.partial").exists()


@pytest.mark.integration
def test_same_seed_twice_gives_identical_metrics(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    runs = []
    for i in range(2):
        recipe = tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, FULL, output_dir=str(tmp_path / f"out{i}"))
        assert cli("run", _write(tmp_path, recipe, f"r{i}.yaml"))[0] == 0
        m = read_metrics(tmp_path / f"out{i}" / "tiny" / "metrics.json")
        runs.append((m.evaluations, [h["train_loss"] for h in m.reports["distill"]["student"]["history"]]))
    assert runs[0] == runs[1]


@pytest.mark.integration
def test_finetuned_teacher_is_reused_not_retrained(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    passes = [{"name": "finetune_teacher", "options": {"epochs": 1, "batch_size": 16}}]
    recipe = tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, passes, cache_dir=str(tmp_path / "cache"))  # its own
    path = _write(tmp_path, recipe)
    assert cli("run", path)[0] == 0
    first = read_metrics(tmp_path / "results" / "tiny" / "metrics.json").reports["finetune_teacher"]
    assert cli("run", path)[0] == 0
    second = read_metrics(tmp_path / "results" / "tiny" / "metrics.json").reports["finetune_teacher"]
    assert (first["cached"], second["cached"]) == (False, True) and first["history"] == second["history"]


@pytest.mark.integration
def test_failed_run_leaves_no_complete_looking_result(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    ok = _write(tmp_path, tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, [{"name": "evaluate"}]))
    assert cli("run", ok)[0] == 0
    before = (tmp_path / "results" / "tiny" / "metrics.json").read_text()
    failing = tiny_recipe(
        tmp_path,
        tiny_csv,
        tiny_teacher_dir,
        [{"name": "evaluate"}, {"name": "evaluate", "options": {"models": ["ghost"]}}],
    )
    code, _, err = cli("run", _write(tmp_path, failing, "f.yaml"))
    assert code == 2 and "evaluate.models names ['ghost']" in err
    assert (tmp_path / "results" / "tiny" / "metrics.json").read_text() == before  # the last complete run is intact
    partial = read_metrics(tmp_path / "results" / "tiny.partial" / "metrics.json")
    assert partial.status == "failed" and [p.name for p in partial.passes] == ["evaluate"] and "ghost" in partial.error
    assert partial.evaluations["teacher"].splits["test"]["accuracy"] >= 0  # what finished is kept


def _bad_inputs(tmp_path: Path, csv: Path, teacher: Path) -> dict[str, tuple[dict | None, str]]:
    distil = tmp_path / "distilbert"
    DistilBertModel(DistilBertConfig(dim=32, hidden_dim=64, n_layers=1, n_heads=2)).save_pretrained(distil)
    ev = [{"name": "evaluate"}]
    base = lambda **kw: tiny_recipe(tmp_path, csv, teacher, ev) | kw
    return {
        "unknown pass": (tiny_recipe(tmp_path, csv, teacher, [{"name": "quantise"}]), "unknown pass 'quantise'"),
        "option typo": (
            tiny_recipe(tmp_path, csv, teacher, [{"name": "distill", "options": {"temprature": 2}}]),
            "did you mean 'temperature'",
        ),
        "missing recipe": (None, "not found"),
        "missing column": (base(task={"dataset": str(csv), "label_column": "stars"}), "has no column 'stars'"),
        "unseen labels": (
            base(task={"dataset": str(csv), "label_column": "sentiment", "labels": ["negative", "positive"]}),
            "values not in task.labels",
        ),
        "non-BERT teacher": (base(teacher={"model": str(distil)}), "is a 'distilbert' model"),
        "hub id offline": (base(teacher={"model": "google-bert/bert-base-uncased"}), "hub is offline"),
        "empty after filter": (
            base(
                task={
                    "dataset": str(csv),
                    "label_column": "sentiment",
                    "filters": [{"column": "confidence", "op": "<", "value": -1}],
                }
            ),
            "no training rows left",
        ),
        "bad groups": (
            tiny_recipe(tmp_path, csv, teacher, [{"name": "convert", "options": {"groups": "3,1,1,1,1,1"}}]),
            "groups.q=3 must divide",
        ),
        "missing layer": (
            tiny_recipe(tmp_path, csv, teacher, [{"name": "convert", "options": {"layers": [5]}}]),
            "distinct indices in 0..1",
        ),
        "zero layers": (
            tiny_recipe(tmp_path, csv, teacher, [{"name": "convert", "options": {"layers": 0}}]),
            "keep between 1 and 2 layers",
        ),
        "too many layers": (
            tiny_recipe(tmp_path, csv, teacher, [{"name": "convert", "options": {"layers": 3}}]),
            "keep between 1 and 2 layers",
        ),
    }


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    for case, (recipe, expected) in _bad_inputs(tmp_path, tiny_csv, tiny_teacher_dir).items():
        path = _write(tmp_path, recipe, "bad.yaml") if recipe else tmp_path / "missing.yaml"
        code, _, err = cli("run", path)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2, case
        assert len(lines) == 1 and expected in lines[0], (case, err)
        assert "Traceback" not in err, case


def test_debug_flag_shows_the_traceback(tmp_path, cli):
    with pytest.raises(Exception, match="not found"):
        cli("--debug", "run", tmp_path / "missing.yaml")


def test_validate_command(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    path = _write(tmp_path, tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, FULL))
    code, out, _ = cli("validate", path, "--set", "passes.distill.epochs=2")
    assert code == 0 and "ok (4 passes" in out
    code, _, err = cli("validate", path, "--set", "passes.distill.alpha=2")
    assert code == 2 and "passes[2] (distill).options.alpha: Input should be less than or equal to 1" in err


def test_convert_command(tmp_path, tiny_teacher_dir, cli):
    out = tmp_path / "student"
    code, stdout, err = cli("convert", tiny_teacher_dir, out, "--groups", "2,2,2,1,2,2", "--layers", "1")
    assert code == 0, err
    assert "energy kept" in stdout
    student = SqueezeBertForSequenceClassification.from_pretrained(out)
    assert student.config.num_hidden_layers == 1 and student.config.output_groups == 2
    assert json.loads((out / "conversion.json").read_text())["layers"] == [1]
    code, _, err = cli("convert", tiny_teacher_dir, tmp_path / "bad", "--groups", "5,1,1,1,1,1")
    assert code == 2 and "valid: 1, 2, 4, 8, 16, 32" in err and not (tmp_path / "bad").exists()


@pytest.mark.integration
def test_interrupted_run_is_one_line_and_leaves_no_result(tmp_path, tiny_csv, tiny_teacher_dir, cli, monkeypatch):
    from compress.passes.evaluate import Evaluate

    def interrupt(self, state, config):
        raise KeyboardInterrupt

    monkeypatch.setattr(Evaluate, "run", interrupt)
    path = _write(
        tmp_path, tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, [{"name": "convert"}, {"name": "evaluate"}])
    )
    code, _, err = cli("run", path)
    assert code == 2 and "run interrupted;" in err and "run the recipe again" in err
    assert not (tmp_path / "results" / "tiny").exists()
    partial = json.loads((tmp_path / "results" / "tiny.partial" / "metrics.json").read_text())
    assert partial["status"] == "failed" and [p["name"] for p in partial["passes"]] == ["convert"]


def test_metrics_of_another_schema_are_refused_with_the_fix(tmp_path, cli):
    from compress.core.errors import CompressError

    old = tmp_path / "old"
    old.mkdir()
    # schema 1 had no version
    (old / "metrics.json").write_text(json.dumps({"name": "old", "status": "complete", "metrics": {"evaluate": {}}}))
    with pytest.raises(CompressError, match=r"metrics schema 1, this one reads 2.*rerun the recipe"):
        read_metrics(old / "metrics.json")
    code, _, err = cli("report", old, "--out", tmp_path / "r")
    assert code == 2 and "rerun the recipe" in err and not (tmp_path / "r").exists()
