"""Deploy targets beyond ONNX Runtime: ORT mobile, OpenVINO (+ NNCF int8), ExecuTorch (XNNPACK, + PT2E int8).

Every artifact is loaded by its own runtime's plain API (not compress's runners) and compared with PyTorch;
the teacher is timed in each runtime a student is timed in, so speed-ups stay against its fastest form.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, SqueezeBertForSequenceClassification

from compress.core.errors import CompressError
from compress.deploy.targets import TARGETS, compile_module, get_target
from conftest import latency, run_metrics, write_tiny_recipe

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
ALL = ["onnx", "ort-mobile", "openvino", "executorch"]


def _inputs(run, n=4):
    tok = AutoTokenizer.from_pretrained(run / "models" / "student")
    return dict(
        tok(
            ["the movie was great", "awful slow service, never again", "ok", "fine I guess"][:n],
            padding=True,
            return_tensors="np",
        )
    )


@pytest.mark.integration
def test_every_target_exported_checked_evaluated_and_timed(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    passes = [
        {"name": "convert", "options": {"groups": "2,2,2,1,2,2"}},
        {"name": "export", "options": {"models": ["student"], "targets": ALL, "int8": True, "calibration_samples": 16}},
        {"name": "quantize", "options": {}},
        {"name": "evaluate", "options": {"latency": True, "latency_runs": 5, "latency_seq": 16}},
    ]
    code, _, err = cli("run", write_tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, passes))
    assert code == 0, err
    run, m = run_metrics(tmp_path)
    built = m.reports["export"]["student"]["targets"]
    assert set(built) == {
        "ort-mobile-fp32",
        "ort-mobile-int8",
        "openvino-fp32",
        "openvino-int8",
        "executorch-xnnpack-fp32",
        "executorch-xnnpack-int8",
    }
    assert all(b["max_abs_diff"] < 1e-3 for k, b in built.items() if k.endswith("fp32")), built
    assert all(0 < b["max_abs_diff"] < 0.5 and b["size_mb"] > 0 for b in built.values()), built
    ev = m.evaluations
    student = ev["student"].splits["test"]["accuracy"]
    for form in ("student.openvino", "student.pte"):  # fp32 in another runtime: the same predictions
        assert ev[form].splits["test"]["accuracy"] == student, (form, ev[form].splits["test"]["accuracy"], student)
    for form, runtime in (("student.openvino-int8", "openvino"), ("student.pte-int8", "executorch")):
        assert (ev[form].runtime, ev[form].precision) == (runtime, "int8") and 0 <= ev[form].splits["test"][
            "accuracy"
        ] <= 1
    teacher = {f"teacher.{t.suffix}" if t.suffix else "teacher": t for t in TARGETS.values()}
    assert set(teacher) <= set(ev), sorted(ev)  # the teacher in every runtime a student is timed in, both precisions
    fastest = min(teacher, key=lambda n: ev[n].latency.p10_ms)
    assert all(ev[n].latency.reference == fastest for n in ev if ev[n].latency), fastest
    assert ev["teacher.pte-int8"].latency.runtime == "executorch" and not ev["teacher.pte-int8"].splits

    # each artifact through its runtime's own API, against PyTorch
    model = SqueezeBertForSequenceClassification.from_pretrained(run / "models" / "student").eval()
    feeds = _inputs(run)
    with torch.no_grad():
        ref = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    import onnxruntime as ort

    sess = ort.InferenceSession(str(run / "models/student/model.ort"), providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(["logits"], feeds)[0] - ref).max() < 1e-3
    import openvino as ov

    compiled = ov.Core().compile_model(str(run / "models/student/openvino/openvino.xml"), "CPU")
    assert np.abs(compiled(feeds)[0] - ref).max() < 1e-3
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(run / "models/student/model.pte")).load_method("forward")
    out = method.execute([torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask", "token_type_ids")])[0]
    assert np.abs(out.numpy() - ref).max() < 1e-3  # dynamic batch and sequence: 4 texts at their padded length

    card = (run / "models" / "student" / "README.md").read_text()
    assert "openvino/openvino.xml" in card and "model.pte" in card and "model.ort" in card and "not on a phone" in card

    options = ["--json", "--runs", "5", "--seq", "16", "--backends", "ort,openvino,executorch-int8"]
    code, out, err = cli("bench", run / "models" / "student", *options)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["backend"] for r in rows] == ["ort", "openvino", "executorch-int8"] and all(r["p10_ms"] > 0 for r in rows)


@pytest.mark.parametrize(
    "name", ["openvino-fp32", "openvino-int8", "executorch-xnnpack-fp32", "executorch-xnnpack-int8"]
)
def test_blocks_compile_in_each_target(tmp_path, name):
    """The latency model times blocks through the same exporters and quantizers as whole models."""
    block = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))
    folder = tmp_path / "groups 4,1,4"  # a comma in the path once made OpenVINO read two file names
    folder.mkdir()
    run = compile_module(block, {"x": torch.randn(1, 16, 32)}, get_target(name), folder, threads=1)
    out = run()
    assert out is not None


@pytest.mark.parametrize(("target", "module"), [("openvino", "nncf"), ("executorch", "executorch")])
def test_missing_extra_is_one_line_naming_it(tmp_path, tiny_csv, tiny_teacher_dir, cli, monkeypatch, target, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it raises ImportError
    passes = [
        {"name": "convert", "options": {"groups": "2,2,2,1,2,2"}},
        {"name": "export", "options": {"models": ["student"], "targets": [target]}},
    ]
    code, _, err = cli("run", write_tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, passes))
    assert code == 2 and f"pip install 'compress[{target}]'" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "results" / "tiny").exists()  # no half-written run


def test_unknown_export_target_is_refused(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    passes = [{"name": "convert", "options": {}}, {"name": "export", "options": {"targets": ["tflite"]}}]
    code, _, err = cli("run", write_tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, passes))
    assert code == 2 and "tflite" in err and "executorch" in err, err


@pytest.mark.integration
def test_search_optimizes_openvino_int8(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    """search.target in another runtime: trials are scored in it, the latency model and the teacher are timed in it."""
    import yaml
    from test_search import load

    from compress.core.frontier import TeacherReference, TrialScore
    from conftest import write_recipe

    one = {"passes.convert.layers": {"choices": [1]}}  # one trial over few blocks: every block compiles in OpenVINO
    recipe = write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, trials=1, space=one, target="openvino-int8")
    raw = yaml.safe_load(recipe.read_text())
    code, _, err = cli("search", recipe)
    assert code == 2 and "targets: [onnx, openvino], int8: true" in err and len(err.strip().splitlines()) == 1, err
    raw["passes"][3]["options"] |= {"targets": ["onnx", "openvino"], "int8": True, "calibration_samples": 8}
    recipe.write_text(yaml.safe_dump(raw))
    code, _, err = cli("search", recipe)
    assert code == 0, err
    folder = tmp_path / "results" / "tiny"
    model = json.loads((folder / "latency_model.openvino-int8.json").read_text())
    assert "teacher.openvino-int8" in model["teacher_ms"] and model["anchors"]
    teacher = TeacherReference.model_validate(json.loads((folder / "search.json").read_text())["teacher"])
    assert {"teacher.openvino", "teacher.openvino-int8", "teacher.int8"} <= set(teacher.forms)
    for t in load(folder / "study.db").get_trials():
        s = TrialScore.model_validate(t.user_attrs["score"])
        assert (
            s.form == "student.openvino-int8"
            and s.target == "openvino-int8"
            and s.latency.runtime == "openvino"
            and s.predicted_ms > 0
        )


class _Zeta(torch.nn.Module):
    """A block with an operator outside the Core ATen opset (as a custom activation would bring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.zeta(x.abs() + 2, torch.tensor(2.0))


def test_an_operator_a_target_cannot_lower_is_named(tmp_path):
    with pytest.raises(
        CompressError,
        match=r"executorch-xnnpack-fp32 cannot lower _Zeta: operator aten\.special_zeta\.default is not supported",
    ):
        compile_module(_Zeta(), {"x": torch.randn(1, 4, 8)}, get_target("executorch-xnnpack-fp32"), tmp_path, threads=1)
    assert not (tmp_path / "block.pte").exists()  # nothing half-written


def test_target_names_and_aliases():
    assert (
        get_target("executorch-xnnpack").name == "executorch-xnnpack-fp32"
        and get_target("openvino").name == "openvino-fp32"
    )
    with pytest.raises(
        CompressError, match=r"unknown deploy target 'openvino-int4' \(did you mean 'openvino-int8'\?\)"
    ):
        get_target("openvino-int4")


def test_a_report_on_executorch_says_its_milliseconds_are_not_a_phones(tmp_path):
    """A study scored in ExecuTorch (search.target executorch-xnnpack; its trial forms are tested in
    tests/test_latency_model.py, its export, evaluation and timing in test_every_target_exported_...): the report
    names the target and says the milliseconds ran XNNPACK's x86 kernels here."""
    import pandas as pd

    from compress.core.frontier import TeacherReference
    from compress.core.records import FormEval, SplitScores
    from compress.report.points import Context, _form_row
    from compress.report.render import Page, render_markdown
    from compress.report.summary import summarize
    from compress.study.info import StudyInfo

    lat = latency(runtime="executorch", precision="fp32", speedup=1.0)
    scores = {
        "validation": SplitScores(n=9, metrics={"accuracy": 0.7}),
        "test": SplitScores(n=9, metrics={"accuracy": 0.7}),
    }
    teacher_form = FormEval(
        form="teacher.pte", model="teacher", runtime="executorch", precision="fp32", latency=lat, splits=scores
    )
    torch_form = teacher_form.model_copy(update={"form": "teacher", "runtime": "torch"})
    teacher = TeacherReference(forms={"teacher": torch_form, "teacher.pte": teacher_form})
    student = teacher_form.model_copy(update={"form": "student.pte", "model": "student"})
    points = pd.DataFrame(
        [
            _form_row("r", "accuracy", "teacher", teacher_form),
            _form_row("r", "accuracy", "student", student, "student.pte"),
        ]
    )
    info = StudyInfo(study="s", storage="sqlite:///x.db", teacher=teacher, target="executorch-xnnpack-fp32")
    summary, picks = summarize(points, points.iloc[:0], Context(teacher, None, info, tmp_path / "r"), {"r": teacher})
    md = render_markdown(Page("r", points, points.iloc[:0], summary, picks, False))
    assert summary.target == "executorch-xnnpack-fp32"
    assert "Deploy target: **executorch-xnnpack-fp32**" in md and "not a phone's ARM ones" in md


def test_openvino_gets_dense_qkv_apart_in_any_folder(tmp_path, tokenizer):
    """OpenVINO's graph has three Q/K/V MatMuls per dense layer (its attention kernel absorbs their head transposes,
    measured 7-9% faster), still the model's predictions, written under a folder whose name has a comma."""
    import openvino as ov

    from compress.deploy.targets import build
    from conftest import tiny_bert

    model = tiny_bert(layers=2)
    b = dict(tokenizer(["the movie was great", "ok"], padding=True, return_tensors="pt"))
    xml = build(model, get_target("openvino-fp32"), tmp_path / "groups 1,1" / TARGETS["openvino-fp32"].artifact)
    ir = ov.Core().read_model(str(xml))
    matmuls = [op for op in ir.get_ops() if op.get_type_name() == "MatMul"]
    assert len(matmuls) == 2 * 8 + 2  # per layer Q, K, V, scores, context, post, FFN in and out; pooler, classifier
    got = ov.Core().compile_model(ir, "CPU").create_infer_request().infer({k: v.numpy() for k, v in b.items()})
    with torch.no_grad():
        ref = model(**b).logits.numpy()
    assert np.abs(next(iter(got.values())) - ref).max() < 1e-4


def test_openvino_int8_keeps_the_task_head_fp32(tmp_path):
    """NNCF quantizes the encoder's matmuls, not the pooler's and classifier's: they run on one token, so int8 buys
    them nothing, and quantizing that one pooled vector cost a regression student 2.5 Pearson points on STS-B."""
    import openvino as ov

    from compress.deploy import openvino
    from conftest import tiny_bert

    model = tiny_bert(layers=2).eval()
    g = torch.Generator().manual_seed(0)
    calib = [
        {
            "input_ids": torch.randint(5, 500, (1, 12), generator=g),
            "attention_mask": torch.ones(1, 12, dtype=torch.long),
            "token_type_ids": torch.zeros(1, 12, dtype=torch.long),
        }
        for _ in range(4)
    ]
    ir = ov.Core().read_model(str(openvino.build(model, tmp_path / "ov", True, lambda: calib)))

    def quantized(op) -> bool:
        return any(i.get_source_output().get_node().get_type_name() == "FakeQuantize" for i in op.inputs())

    matmuls = {op.get_friendly_name(): op for op in ir.get_ops() if op.get_type_name() == "MatMul"}
    head = [op for name, op in matmuls.items() if name.startswith(("/pooler/", "/classifier/"))]
    assert len(head) == 2 and not any(map(quantized, head)), sorted(matmuls)
    projections = [op for name, op in matmuls.items() if name.startswith("/layers.") and "/parts." in name]
    assert len(projections) == 2 * 6 and all(map(quantized, projections))  # q, k, v, post, inter, out per layer
