"""Inference form, ONNX export, int8 quantization, latency harness, `compress bench`."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from transformers import BertConfig, SqueezeBertConfig

from compress.convert.build import convert
from compress.core.errors import CompressError
from compress.core.groups import Groups
from compress.deploy.flops import flops_per_sequence
from compress.deploy.latency import interleaved, repeated, summarize
from compress.deploy.matmul_form import EncoderForInference, GroupedLinear
from compress.deploy.onnx import export, is_int8, session
from compress.deploy.quantize import onnxruntime_int8, torch_int8
from conftest import run_metrics, tiny_bert, write_tiny_recipe
from conftest import teacher_forms as forms_of_teacher


def tiny_squeeze():
    teacher = tiny_bert(layers=2)
    student, _ = convert(teacher, groups=Groups(4, 4, 4, 1, 4, 4), init="identity")
    return student.eval()


def _batch(tokenizer, texts=("the movie was great", "awful slow service today, never again", "ok")):
    return dict(tokenizer(list(texts), padding=True, return_tensors="pt"))


@pytest.mark.parametrize("mode", ["split", "batched"])
def test_grouped_linear_equals_grouped_conv(mode):
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(32, 64, 1, groups=4)
    x = torch.randn(2, 32, 7)  # [B, C, L]
    lin = GroupedLinear(conv.weight, conv.bias, 4, mode)
    with torch.no_grad():
        assert torch.allclose(lin(x.transpose(1, 2)), conv(x).transpose(1, 2), atol=1e-5)


@pytest.mark.parametrize(("mode", "fuse_dense_qkv"), [("split", True), ("batched", True), ("batched", False)])
def test_inference_form_matches_transformers(tokenizer, mode, fuse_dense_qkv):
    b = _batch(tokenizer)
    for model in (tiny_squeeze(), tiny_bert()):
        form = EncoderForInference(model, mode, fuse_dense_qkv)
        with torch.no_grad():
            ref = model(**b).logits
            got = form(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        assert (ref - got).abs().max() < 1e-5
        if model.config.model_type == "bert" and mode == "batched":  # dense Q/K/V: one MatMul only when asked
            assert all((layer.qkv is not None) == fuse_dense_qkv for layer in form.layers)


def test_onnx_export_dynamic_axes_and_int8(tmp_path, tokenizer):
    model = tiny_squeeze()
    path = tmp_path / "model.onnx"
    export(model, path)
    sess = session(path, threads=1)
    for texts in (("one",), ("a much longer sentence about cars and food", "short", "x y z")):
        b = _batch(tokenizer, texts)
        with torch.no_grad():
            ref = model(**b).logits.numpy()
        got = sess.run(["logits"], {k: v.numpy() for k, v in b.items()})[0]
        assert np.abs(ref - got).max() < 1e-4
    with pytest.raises(CompressError, match="per_channel int8 needs 2-D MatMul weights"):
        onnxruntime_int8(path, tmp_path / "pc.onnx", static=False, per_channel=True)  # the batched form has 3-D weights
    q = tmp_path / "model.int8.onnx"
    info = onnxruntime_int8(path, q, static=False, per_channel=False)
    assert is_int8(q) and not is_int8(path) and info["mode"] == "dynamic"
    # attention's Q.K^T and P.V (2 layers) stay fp32
    assert _matmul_kinds(q) == {
        "int8": len(_weight_matmuls(path)),
        "fp32": 2 * 2,
    }
    got = session(q, 1).run(["logits"], {k: v.numpy() for k, v in _batch(tokenizer).items()})[0]
    assert got.shape == (3, 3) and np.isfinite(got).all()
    split = tmp_path / "split.onnx"
    export(model, split, "split")
    onnxruntime_int8(split, tmp_path / "split.pc.onnx", static=False, per_channel=True)
    got = session(tmp_path / "split.pc.onnx", 1).run(["logits"], {k: v.numpy() for k, v in _batch(tokenizer).items()})[
        0
    ]
    assert np.isfinite(got).all()
    with pytest.raises(CompressError, match="already quantized"):
        onnxruntime_int8(q, tmp_path / "again.onnx", static=False, per_channel=False)
    with pytest.raises(CompressError, match="needs a calibration set: set calibration_samples >= 1"):
        onnxruntime_int8(path, tmp_path / "st.onnx", static=True, per_channel=False, calib=None, samples=0)


def test_torch_int8_quantizes_the_grouped_layers(tokenizer):
    model = tiny_squeeze()
    q = torch_int8(model)
    dynamic = [m for m in q.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    # per layer: q,k,v (4 groups each), post (1), inter, output (4); pooler, classifier
    assert len(dynamic) == 2 * (4 * 3 + 1 + 4 + 4) + 2
    assert not [m for m in q.modules() if type(m) is torch.nn.Linear]
    b = _batch(tokenizer)
    with torch.no_grad():
        assert torch.allclose(q(b["input_ids"], b["attention_mask"], b["token_type_ids"]), model(**b).logits, atol=0.05)


def test_flops_match_the_papers_figures():
    bert = flops_per_sequence(BertConfig(num_labels=2), 128) / 1e9
    squeeze = flops_per_sequence(SqueezeBertConfig(num_labels=2), 128) / 1e9  # groups 4,4,4,1,4,4
    assert bert == pytest.approx(22.4, rel=0.02) and squeeze == pytest.approx(7.4, rel=0.02)


def test_summary_statistics():
    t = summarize("x", [0.010, 0.011, 0.012, 0.013, 0.100])
    assert t.median_ms == pytest.approx(12.0) and t.iqr_ms == pytest.approx(2.0) and t.p90_ms > 13 and t.cv > 0.5


def _loaded_machine(slow_calls: int):
    """Two callables whose first `slow_calls` calls (both together) take twice as long, like a neighbour's burst."""
    calls = [0]

    def make(ms):
        def fn():
            calls[0] += 1
            time.sleep(ms / 1000 * (2 if calls[0] <= slow_calls else 1))

        return fn

    return {"a": make(2), "b": make(4)}


def test_interleaved_times_blocks_of_each_callable():
    order = []
    t = interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, runs=6, warmup=1, block=3, settle_s=0
    )
    assert t["a"].runs == t["b"].runs == 6
    assert "".join(order) == "ab" + ("aaaa" + "bbbb") * 2  # warm-up each, then per block: one untimed call + 3 timed


def test_repeated_reruns_a_repeat_slowed_by_machine_load():
    # both callables: 3 warm-up calls, 10 timed, 4 blocks (of 3, 3, 3, 1) each after 1 untimed call
    per_repeat = 2 * (3 + 10 + 4)
    out, redone = repeated(_loaded_machine(per_repeat), runs=10, repeats=3)
    assert len(redone) == 1 and redone[0] > 1.5  # the first repeat ran ~2x slower and was measured again
    assert out["a"].median_ms == pytest.approx(2.1, abs=0.5) and out["b"].cv_of_medians < 0.15
    out, redone = repeated(_loaded_machine(per_repeat), runs=10, repeats=3, max_redo=0)
    assert redone == [] and out["b"].cv_of_medians > 0.25  # kept: the spread shows it


@pytest.mark.integration
def test_full_deploy_recipe_and_model_card(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    passes = [
        {"name": "convert", "options": {"groups": "2,2,2,1,2,2"}},
        {"name": "export", "options": {"models": ["student"]}},
        {"name": "quantize", "options": {"suffix": "int8"}},
        {
            "name": "quantize",
            "options": {
                "suffix": "int8-static",
                "mode": "static",
                "calibration": "percentile",
                "calibration_samples": 16,
            },
        },
        {"name": "quantize", "options": {"suffix": "torch-int8", "backend": "torch"}},
        {"name": "quantize", "options": {"suffix": "int8-pc", "per_channel": True}},  # per-channel: the split form
        {"name": "evaluate", "options": {"latency": True, "latency_runs": 5, "latency_seq": 16}},
    ]
    code, _, err = cli("run", write_tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, passes))
    assert code == 0, err
    run, m = run_metrics(tmp_path)
    q, ev = m.reports["quantize"], m.evaluations
    assert m.reports["export"]["student"]["max_abs_diff"] < 1e-3
    assert set(q) == {"student.int8", "student.int8-static", "student.torch-int8", "student.int8-pc"}
    assert q["student.int8"]["form"] == "batched" and q["student.int8-pc"]["form"] == "split"
    # runs in ONNX Runtime
    assert ev["student.int8-pc"].splits["test"]["accuracy"] >= 0 and ev["student.int8-pc"].runtime == "onnxruntime"
    assert q["student.int8"]["size_mb_int8"] < q["student.int8"]["size_mb_fp32"]
    assert (
        ev["student.int8"].size_mb == pytest.approx(q["student.int8"]["size_mb_int8"])
        and ev["student.int8"].path == "models/student/model.int8.onnx"
    )
    teacher_forms = {n: ev[n].latency.p10_ms for n in forms_of_teacher()}  # built into the cache, timed alongside
    fastest = min(teacher_forms, key=teacher_forms.__getitem__)
    kinds = {
        "teacher": ("torch", "fp32"),
        "student": ("torch", "fp32"),
        "student.onnx": ("onnxruntime", "fp32"),
        "teacher.onnx": ("onnxruntime", "fp32"),
        "student.torch-int8": ("torch", "int8"),
    }
    for name in (
        "teacher",
        "student",
        "student.onnx",
        "student.int8",
        "student.int8-static",
        "student.torch-int8",
        "teacher.onnx",
        "teacher.int8",
    ):
        lat = ev[name].latency
        assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms and lat.reference == fastest
        assert lat.speedup == pytest.approx(teacher_forms[fastest] / lat.p10_ms) and set(lat.speedups) == set(
            teacher_forms
        )
        assert (lat.runtime, lat.precision) == kinds.get(name, ("onnxruntime", "int8"))
        assert name.startswith("teacher.") or 0 <= ev[name].splits["test"]["accuracy"] <= 1
    # reference-only forms are timed, not scored
    assert ev[fastest].latency.speedup == 1.0 and not ev["teacher.int8"].splits
    assert ev["student"].model == ev["student.int8"].model == "student" and ev["teacher.int8"].model == "teacher"
    assert ev["student.onnx"].splits["test"]["accuracy"] == ev["student"].splits["test"]["accuracy"]
    card = (run / "models" / "student" / "README.md").read_text()
    assert (
        "SqueezeBertForSequenceClassification.from_pretrained" in card
        and "model.int8.onnx" in card
        and "student.int8" in card
    )
    code, out, err = cli(
        "bench",
        run / "models" / "student",
        "--json",
        "--runs",
        "5",
        "--repeats",
        "2",
        "--seq",
        "16",
        "--backends",
        "torch,ort,ort-int8",
    )
    assert code == 0, err
    rows = json.loads(out)
    assert [r["backend"] for r in rows] == ["torch", "ort", "ort-int8"] and all(r["median_ms"] > 0 for r in rows)
    assert all(len(r["medians_ms"]) == 2 and r["runs"] == 10 and r["cv_of_medians"] >= 0 for r in rows)


def test_bench_refuses_non_bert_folders(tmp_path, cli):
    from transformers import DistilBertConfig, DistilBertModel

    DistilBertModel(DistilBertConfig(dim=32, hidden_dim=64, n_layers=1, n_heads=2)).save_pretrained(tmp_path / "m")
    code, _, err = cli("bench", tmp_path / "m")
    assert code == 2 and "a 'distilbert' model; expected one of ['bert', 'squeezebert']" in err
    code, _, err = cli("bench", tmp_path)
    assert code == 2 and "neither a model folder" in err
    code, _, err = cli("bench", tmp_path / "m", "--backends", "tensorrt")
    assert code == 2 and "unknown backend(s) ['tensorrt']" in err


def test_quantize_option_errors():
    from pydantic import ValidationError

    from compress.passes.quantize import Quantize

    with pytest.raises(ValidationError, match="backend"):
        Quantize.Config(backend="tensorrt")
    with pytest.raises(
        ValidationError, match="per_channel needs 2-D weights: leave mode_onnx unset or set it to split"
    ):
        Quantize.Config(per_channel=True, mode_onnx="batched")


def test_missing_backend_names_the_package(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "model.onnx"
    export(tiny_squeeze(), path)
    monkeypatch.setitem(sys.modules, "optimum.onnxruntime.configuration", None)  # as if not installed
    with pytest.raises(
        CompressError,
        match=(
            r"quantize backend onnxruntime needs optimum, which is not installed .*: pip install "
            r"'optimum-onnx\[onnxruntime\]'"
        ),
    ):
        onnxruntime_int8(path, tmp_path / "q.onnx", static=False, per_channel=False)


@pytest.mark.integration
def test_neural_compressor_backend_tunes_and_reports(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    passes = [
        {"name": "convert", "options": {"groups": "2,2,2,1,2,2", "fit_samples": 16}},
        {"name": "quantize", "options": {"backend": "neural-compressor", "tolerable_loss": 0.5}},
        {"name": "evaluate", "options": {"models": ["student.int8"], "splits": ["validation"]}},
    ]
    code, _, err = cli("run", write_tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, passes))
    assert code == 0, err
    run, m = run_metrics(tmp_path)
    q = m.reports["quantize"]["student.int8"]
    assert q["backend"] == "neural-compressor" and q["tried"] and q["chosen"] == q["tried"][-1]["config"]
    assert q["tried"][-1]["val_accuracy"] >= q["fp32_val_accuracy"] * 0.5  # within the tolerable (relative) loss
    assert is_int8(run / "models" / "student" / "model.int8.onnx") and "student.int8" in m.evaluations
    # attention stays fp32 here too
    assert _matmul_kinds(run / "models" / "student" / "model.int8.onnx")["fp32"] == 2 * 2


def _weight_matmuls(path) -> list[str]:
    import onnx

    g = onnx.load(str(path)).graph
    weights = {i.name for i in g.initializer}
    # Gemm: pooler, classifier
    return [n.name for n in g.node if n.op_type in ("MatMul", "Gemm") and any(i in weights for i in n.input)]


def _matmul_kinds(path) -> dict[str, int]:
    import onnx

    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    return {
        "int8": sum(o in ("MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul") for o in ops),
        "fp32": ops.count("MatMul"),
    }


def test_neural_compressor_missing_names_the_install(tmp_path, monkeypatch):
    import sys

    from compress.deploy.inc import neural_compressor_int8

    monkeypatch.setitem(sys.modules, "onnx_neural_compressor.quantization.tuning", None)
    with pytest.raises(CompressError, match="pip install --no-deps onnx-neural-compressor"):
        neural_compressor_int8(
            tmp_path / "m.onnx", tmp_path / "q.onnx", lambda p: 1.0, tolerable_loss=0.01, max_trials=2
        )


@pytest.mark.integration
def test_evaluate_pattern_matching_nothing_is_an_error(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    passes = [{"name": "evaluate", "options": {"models": ["student*"], "splits": ["validation"]}}]
    code, _, err = cli("run", write_tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, passes))
    assert code == 2 and "evaluate.models names nothing" in err


@pytest.mark.integration
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_gpu_latency_without_a_gpu_is_an_error(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    passes = [
        {
            "name": "evaluate",
            "options": {"splits": ["validation"], "latency": True, "latency_device": "cuda", "latency_runs": 5},
        }
    ]
    code, _, err = cli("run", write_tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, passes))
    assert code == 2 and "latency_device is cuda but no CUDA GPU is visible; use latency_device: cpu" in err, err
    assert not (tmp_path / "results" / "tiny").exists()  # no half-written result


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"student.openvino": {"form": 3}}'])
def test_a_damaged_forms_record_is_one_line_naming_the_fix(tmp_path, text):
    """<run>/forms.json (the forms finalize added to a finished run): a damaged one is refused in one line."""
    from compress.core.errors import CompressError
    from compress.deploy.forms import ADDED, added_forms

    assert added_forms(tmp_path) == {}  # none added yet
    (tmp_path / ADDED).write_text(text)
    with pytest.raises(CompressError, match="delete it and run compress finalize again") as e:
        added_forms(tmp_path)
    assert "\n" not in str(e.value)
