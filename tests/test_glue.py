"""`compress glue` on generated folders in GLUE's exact layout: CoLA without a header, STS-B with its ten columns,
MNLI with matched and mismatched dev files (and GLUE's unescaped quotes); a missing task folder is skipped and said."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from conftest import WORDS

CUES = {"awful": 0, "great": 1}


def sentences(n: int, seed: int, period: int = 1) -> list[tuple[str, str]]:
    """Toy sentences whose cue word alternates every `period` rows (pairs of different periods cover every
    combination)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        cue = list(CUES)[(i // period) % 2]
        words = [*rng.sample([w for w in WORDS if w not in CUES], 4), cue]
        rng.shuffle(words)
        out.append((" ".join(words) + (' "quoted' if i % 7 == 0 else ""), cue))
    return out


def write_glue(root: Path) -> None:
    (root / "CoLA").mkdir(parents=True)
    for split, n in (("train", 160), ("dev", 40)):  # no header: source, label, original label, sentence
        rows = [f"gj04\t{CUES[c]}\t{'' if CUES[c] else '*'}\t{s}" for s, c in sentences(n, hash(split) % 100)]
        (root / "CoLA" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    (root / "STS-B").mkdir()
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    for split, n in (("train", 160), ("dev", 40)):
        pairs = zip(sentences(n, 1), sentences(n, 2), strict=True)
        rows = [
            f"{i}\tmain\tf\t2012\t{i}\tnone\tnone\t{a}\t{b}\t{2.5 + 2 * (CUES[ca] - CUES[cb]) + 0.1 * (i % 3):.3f}"
            for i, ((a, ca), (b, cb)) in enumerate(pairs)
        ]
        (root / "STS-B" / f"{split}.tsv").write_text("\n".join([header, *rows]) + "\n")
    (root / "MNLI").mkdir()
    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tgold_label"
    labels = {(0, 0): "entailment", (1, 1): "entailment", (0, 1): "contradiction", (1, 0): "contradiction"}
    for split, n in (("train", 160), ("dev_matched", 40), ("dev_mismatched", 30)):
        pairs = zip(sentences(n, 3), sentences(n, 4, period=2), strict=True)
        rows = [
            f"{i}\t{i}\t{i}e\tfiction\t{a}\t{b}\t{labels[CUES[ca], CUES[cb]]}"
            for i, ((a, ca), (b, cb)) in enumerate(pairs)
        ]
        (root / "MNLI" / f"{split}.tsv").write_text("\n".join([header, *rows]) + "\n")


def template_recipe(tmp_path: Path, teacher: Path) -> Path:
    template = {
        "name": "g",
        "seed": 1,
        "device": "cpu",
        "threads": 1,
        "output_dir": str(tmp_path / "results"),
        "task": {"max_length": 24, "max_train_samples": 150},
        "teacher": {"model": str(teacher)},
        "passes": [
            {"name": "finetune_teacher", "options": {"epochs": 2, "lr": 1e-3}},
            {"name": "convert", "options": {"groups": "2,2,2,1,2,2", "fit_samples": 16}},
            {"name": "distill", "options": {"epochs": 1, "lr": 1e-3}},
            {"name": "export", "options": {"models": ["student"]}},
            {"name": "quantize"},
            {
                "name": "evaluate",
                "options": {
                    "models": ["teacher", "student.int8"],
                    "latency": True,
                    "latency_seq": 16,
                    "latency_runs": 5,
                },
            },
        ],
    }
    recipe = tmp_path / "glue.yaml"
    recipe.write_text(yaml.safe_dump(template))
    return recipe


@pytest.mark.integration
def test_glue_table_on_generated_folders(tmp_path, tiny_teacher_dir, cli):
    write_glue(tmp_path / "glue")
    recipe = template_recipe(tmp_path, tiny_teacher_dir)
    code, _, err = cli(
        "glue",
        tmp_path / "glue",
        "--recipe",
        recipe,
        "--out",
        tmp_path / "report",
        "--tasks",
        "CoLA,SST-2,STS-B,MNLI-m,MNLI-mm",
    )
    assert code == 0, err
    assert "GLUE SST-2: no folder" in err and "skipped" in err
    summary = json.loads((tmp_path / "report" / "glue.json").read_text())
    rows = {r["task"]: r for r in summary["rows"]}
    assert list(rows) == ["CoLA", "STS-B", "MNLI-m", "MNLI-mm"]
    assert [rows[t]["metric"] for t in rows] == ["mcc", "pearson", "accuracy", "accuracy"]
    assert (
        rows["MNLI-m"]["test_examples"] == 40
        and rows["MNLI-mm"]["test_examples"] == 30
        and rows["CoLA"]["test_examples"] == 40
    )
    assert all(
        r["student_form"] == "student.int8" and r["speedup"] > 0 and r["reference"].startswith("teacher")
        for r in rows.values()
    )
    assert all(
        r["groups"]["q"] == 2 and r["layers"] == 2 and r["ladder"][0]["form"] == "student.int8" for r in rows.values()
    )
    assert summary["glue_score"]["teacher"] == sum(100 * r["teacher"] for r in rows.values()) / 4
    table = (tmp_path / "report" / "glue.md").read_text()
    assert "| CoLA | mcc |" in table and "GLUE score" in table
    metrics = json.loads((tmp_path / "results" / "g-STS-B" / "metrics.json").read_text())
    assert metrics["task_kind"] == "regression" and metrics["labels"] == ["label"]


def test_glue_bad_inputs(tmp_path, cli, monkeypatch):
    """Run from a folder outside the repository: the default template ships in the package, so the errors are
    about the GLUE folder, never a missing recipe."""
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("glue", tmp_path / "nowhere")
    assert code == 2 and "GLUE folder" in err and "does not exist" in err and "recipe" not in err, err
    (tmp_path / "empty").mkdir()
    code, _, err = cli("glue", tmp_path / "empty", "--tasks", "CoLA,WNLI")
    assert code == 2 and "unknown GLUE task(s) WNLI" in err, err
    code, _, err = cli("glue", tmp_path / "empty")
    assert code == 2 and "no GLUE task folder found" in err, err
    code, _, err = cli("glue", tmp_path / "empty", "--recipe", "my-template.yaml")
    assert code == 2 and "recipe 'my-template.yaml' not found" in err, err


@pytest.mark.integration
def test_mnli_without_its_mismatched_file_is_evaluated_matched_only(tmp_path, tiny_teacher_dir, cli):
    write_glue(tmp_path / "glue")
    (tmp_path / "glue" / "MNLI" / "dev_mismatched.tsv").unlink()
    code, _, err = cli(
        "glue",
        tmp_path / "glue",
        "--recipe",
        template_recipe(tmp_path, tiny_teacher_dir),
        "--out",
        tmp_path / "report",
        "--tasks",
        "MNLI-m,MNLI-mm",
    )
    assert code == 0, err
    assert "no dev_mismatched.tsv; evaluating matched only" in err
    assert [r["task"] for r in json.loads((tmp_path / "report" / "glue.json").read_text())["rows"]] == ["MNLI-m"]


def test_the_row_is_the_fastest_student_within_a_point_else_the_most_accurate():
    from compress.core.records import FormEval, Latency, SplitScores
    from compress.glue.glue import pick

    def form(name: str, score: float, speedup: float) -> FormEval:
        shape = {"runtime": "onnxruntime", "precision": "int8", "batch": 1, "seq": 128, "threads": 2, "runs": 5}
        times = {"p10_ms": 1.0, "median_ms": 1.0, "p90_ms": 1.0, "iqr_ms": 0.0, "cv": 0.0, "params": 1, "gflops": 1.0}
        latency = Latency(**shape, **times, speedup=speedup, reference="teacher.int8")
        return FormEval(
            form=name, model=name.split(".")[0], runtime="onnxruntime", precision="int8",
            splits={"test": SplitScores(n=10, metrics={"pearson": score})}, latency=latency,
        )  # fmt: skip

    forms = [form("a.int8", 0.795, 3.0), form("b.int8", 0.802, 2.0), form("c.int8", 0.80, 2.5)]
    score = lambda f: f.splits["test"]["pearson"]
    assert pick(forms, 0.81, score).form == "c.int8"  # a is 1.5 pt short; c is the faster of b and c
    assert pick(forms, 0.83, score).form == "b.int8"  # none within a point: the most accurate


def test_the_table_names_a_students_shape_with_its_heads():
    from compress.glue.glue import markdown

    base = {"task": "STS-B", "metric": "pearson", "teacher": 0.817, "student": 0.818, "student_form": "s.openvino-int8"}
    base |= {"layers": 4, "hidden": 384, "speedup": 2.3, "reference": "teacher.openvino-int8"}
    base |= {"groups": {"q": 1, "k": 1, "v": 1, "post_attention": 1, "intermediate": 2, "output": 2}}
    rows = [base | {"heads": [4, 4, 4, 4]}, base | {"task": "MRPC", "heads": [4, 3, 4, 4]}, base | {"task": "RTE"}]
    table = markdown({"rows": rows, "glue_score": {"teacher": 81.7, "student": 81.8}, "tasks": 3})
    assert "| 4, 384, 4 heads, 1,1,1,1,2,2 |" in table and "| 4, 384, 4/3/4/4 heads, 1,1,1,1,2,2 |" in table
    assert "| 4, 384, 1,1,1,1,2,2 |" in table  # no record of heads (an older run): none shown


def test_real_file_quirks_are_read(tmp_path):
    """MRPC copies that start with a byte-order mark, QQP rows with a missing field or an extra tab: read, and the
    broken rows left out rather than shifted into the wrong columns."""
    from compress.glue.glue import TASKS, read_tsv

    mrpc = tmp_path / "mrpc.tsv"
    mrpc.write_text("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA cat sat.\tThe cat sat.\n", "utf-8")
    df = read_tsv(mrpc, TASKS["MRPC"])
    assert df.to_dict("records") == [{"text": "A cat sat.", "label": "1", "text_pair": "The cat sat."}]
    qqp = tmp_path / "qqp.tsv"
    rows = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "1\t1\t2\tWhy?\tHow?\t0", "2\t3\t4\tWhat?\t1"]
    qqp.write_text("\n".join([*rows, "3\t5\t6\tWho?\tWhom?\textra\t1", "4\t7\t8\tWhen?\tWhere?\t1"]) + "\n")
    df = read_tsv(qqp, TASKS["QQP"])
    assert df["text"].tolist() == ["Why?", "When?"] and df["label"].tolist() == ["0", "1"]
