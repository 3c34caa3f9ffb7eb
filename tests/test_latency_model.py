"""Blocks and the latency model: plans mirror how the inference form fuses, calibration fits, mismatches recalibrate."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import yaml
from transformers import BertConfig

from compress.core.arch import Architecture
from compress.deploy.blocks import block, plan
from compress.deploy.latency import real_inputs
from compress.deploy.latency_model import LatencyModel, agreement, calibrate, fingerprint, fit, load
from compress.deploy.matmul_form import EncoderForInference
from compress.deploy.targets import TARGETS
from conftest import teacher_forms, tiny_recipe

G = ("q", "k", "v", "post_attention", "intermediate", "output")


def arch(groups, layers=2, heads=4, ffn=64, hidden=32) -> Architecture:
    return Architecture(
        hidden=hidden,
        head_size=hidden // heads,
        heads=[heads] * layers,
        ffn=ffn,
        groups=dict(zip(G, groups, strict=True)),
        labels=3,
    )


def test_plan_mirrors_how_the_inference_form_fuses():
    fused = plan(arch((2, 2, 2, 1, 2, 2)))
    assert (
        fused["qkv:hidden=32:heads=4:head_size=8:g=2"] == 2
        and fused["ffn:hidden=32:ffn=64:g=2"] == 2
        and fused["post:hidden=32:heads=4:head_size=8:g=1"] == 2
    )
    unfused = plan(arch((2, 1, 2, 1, 1, 2)))
    assert (
        unfused["proj:hidden=32:heads=4:head_size=8:g=2"] == 4
        and unfused["proj:hidden=32:heads=4:head_size=8:g=1"] == 2
    )
    assert (
        unfused["inter:hidden=32:ffn=64:g=1"] == 2
        and unfused["out:hidden=32:ffn=64:g=2"] == 2
        and unfused["base:hidden=32:labels=3"] == 1
    )
    # OpenVINO's exporter keeps dense Q, K, V apart (its attention kernel absorbs their head transposes); grouped fuse
    dense = arch((1, 1, 1, 1, 1, 1))
    assert plan(dense)["qkv:hidden=32:heads=4:head_size=8:g=1"] == 2
    assert plan(dense, fuse_dense_qkv=False)["proj:hidden=32:heads=4:head_size=8:g=1"] == 6
    assert plan(arch((2, 2, 2, 1, 2, 2)), fuse_dense_qkv=False) == fused
    # 8 groups cannot split 4 heads: Q, K, V apart
    assert "qkv:hidden=32:heads=4:head_size=8:g=8" not in plan(arch((8,) * 6, heads=4))
    model = torch.nn.Module()
    model.config = BertConfig(
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=64,
        num_hidden_layers=3,
        num_labels=2,
        pruned_heads={1: [0, 2]},
    )
    assert Architecture.of(model.config).heads == [4, 2, 4]  # pruned heads narrow their layer


def test_every_block_runs_with_the_shapes_of_its_name():
    a = arch((2, 1, 2, 2, 1, 2))
    for name in plan(a) | plan(arch((2,) * 6)):
        module, inputs = block(name, seq=7)
        with torch.no_grad():
            out = module(*inputs.values())
        first = out[0] if isinstance(out, tuple) else out
        assert first.shape[0] == 1 and (name.startswith("base") or first.shape[-2] == 7), name


@pytest.mark.integration
def test_calibration_fits_anchors_and_predicts_more_for_more_work(tokenizer, tmp_path):
    target = TARGETS["torch-fp32"]
    fp = fingerprint(target, seq=16, batch=1, threads=1)
    feeds = real_inputs(tokenizer, ["a short text", "another one here"], 1, 16)
    anchors = [arch((1,) * 6, layers=2), arch((2,) * 6, layers=1), arch((4, 4, 4, 1, 4, 4), layers=2)]
    teacher = {"teacher": lambda b: None}
    model = calibrate(target, fp, [arch((2, 1, 2, 1, 2, 1))], anchors, teacher, [feeds], runs=8)
    assert model.blocks and model.overhead_ms > 0 and len(model.anchors) == 3 and "teacher" in model.teacher_ms
    assert model.predict(arch((1,) * 6, layers=4)) > model.predict(arch((1,) * 6, layers=1)) > 0
    assert not model.missing([arch((2, 1, 2, 1, 2, 1))]) and model.missing([arch((1,) * 6, ffn=32)])
    added = model.extend([arch((1,) * 6, ffn=32)], target, runs=5)
    assert added > 0 and not model.missing([arch((1,) * 6, ffn=32)])
    assert model.extend([arch((1,) * 6, ffn=32)], target, runs=5) == 0  # nothing new: nothing timed, nothing to save
    path = tmp_path / "lm.json"
    model.save(path)
    again, why = load(path, fp)
    assert again is not None and why == "" and again.predict(anchors[0]) == pytest.approx(model.predict(anchors[0]))
    other, why = load(path, fp.model_copy(update={"threads": 2}))
    assert other is None and "threads 1 -> 2" in why
    path.write_text("{not json")
    assert load(path, fp)[0] is None


@pytest.mark.integration
def test_a_model_from_another_machine_is_detected_recalibrated_and_said(tmp_path, tiny_csv, tiny_teacher_dir, caplog):
    from compress.recipe import parse_recipe
    from compress.study.latency import latency_model
    from compress.study.reference import teacher_reference

    passes = [
        {"name": "convert", "options": {"groups": "2,2,2,1,2,2"}},
        {"name": "export", "options": {"models": ["student"]}},
        {"name": "quantize"},
        {
            "name": "evaluate",
            "options": {"models": ["student*"], "latency": True, "latency_seq": 16, "latency_runs": 5},
        },
    ]
    recipe = parse_recipe(
        tiny_recipe(
            tmp_path,
            tiny_csv,
            tiny_teacher_dir,
            passes,
            search={
                "space": {"passes.convert.layers": {"choices": [1, 2]}},
                "calibration_runs": 5,
                "target": "onnxruntime-fp32",
            },
        )
    )
    folder = tmp_path / "study"
    teacher_reference(recipe, folder)
    model = latency_model(folder, recipe, recipe.search)
    path = folder / "latency_model.onnxruntime-fp32.json"
    saved = json.loads(path.read_text())
    assert saved["fingerprint"]["machine"] == model.fingerprint.machine and set(saved["teacher_ms"]) == teacher_forms()
    saved["fingerprint"]["machine"] = "some other CPU x64 (arm64)"
    path.write_text(json.dumps(saved))
    with caplog.at_level(logging.INFO, logger="compress.study.latency"):
        again = latency_model(folder, recipe, recipe.search)
    assert "calibrated for another setting (machine some other CPU x64 (arm64) -> " in caplog.text
    assert (
        again.fingerprint.machine == model.fingerprint.machine == json.loads(path.read_text())["fingerprint"]["machine"]
    )
    assert isinstance(LatencyModel.model_validate(json.loads(path.read_text())), LatencyModel)


def test_blocks_use_the_shipped_layer_code():
    """A fused QKV block is the very Layer.project of the inference form (not a re-implementation)."""
    module, _ = block("qkv:hidden=32:heads=4:head_size=8:g=2", seq=5)
    assert type(module.layer).__module__ == EncoderForInference.__module__ and module.method == "project"


def test_target_form_errors_name_the_fix(tmp_path, tiny_csv, tiny_teacher_dir):
    from compress.core.errors import CompressError
    from compress.recipe import parse_recipe
    from compress.study.target import target_form

    base = [{"name": "convert"}, {"name": "export", "options": {"models": ["student"]}}, {"name": "quantize"}]
    ev = {"name": "evaluate", "options": {"models": ["student.onnx"]}}

    def recipe(passes, **search):
        return parse_recipe(
            yaml.safe_load(
                yaml.safe_dump(tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, passes, search={"space": {}} | search))
            )
        )

    r = recipe([*base, ev])
    with pytest.raises(CompressError, match=r"the evaluate pass must score 'student\.int8'"):
        target_form(r, r.search, "r.yaml")
    r = recipe([*base, ev], target="onnxruntime-fp32")
    assert target_form(r, r.search, "r.yaml")[1] == "student.onnx"
    r = recipe([base[0], ev], target="onnxruntime-fp32")
    with pytest.raises(CompressError, match="add an export pass"):
        target_form(r, r.search, "r.yaml")
    r = recipe([base[0], {"name": "quantize", "options": {"backend": "torch"}}, {"name": "evaluate"}])
    with pytest.raises(CompressError, match="add a quantize pass"):
        target_form(r, r.search, "r.yaml")
    r = recipe([base[0], {"name": "evaluate", "options": {"latency_device": "cuda"}}], target="torch-fp32")
    with pytest.raises(CompressError, match="the latency model times its blocks on the CPU"):
        target_form(r, r.search, "r.yaml")
    # ExecuTorch (the phone runtime), by its alias: trials are scored in the .pte form the export pass writes
    export = {"name": "export", "options": {"models": ["student"], "targets": ["onnx", "executorch"]}}
    r = recipe([base[0], export, {"name": "evaluate"}], target="executorch-xnnpack")
    target, form = target_form(r, r.search, "r.yaml")
    assert (target.name, target.runtime, form) == ("executorch-xnnpack-fp32", "executorch", "student.pte")
    r = recipe([base[0], export, {"name": "evaluate"}], target="executorch-xnnpack-int8")
    with pytest.raises(CompressError, match=r"targets: \[onnx, executorch\], int8: true"):
        target_form(r, r.search, "r.yaml")


def test_fit_never_ranks_backwards(caplog):
    """A line through anchors that get faster as their blocks get slower (overhead-dominated tiny models, as
    eager PyTorch on a GPU machine gave: slope -4.3) would invert the search's latency axis: fit falls back
    to a proportional scale, which keeps the blocks' order, and warns."""
    assert fit([1.0, 2.0, 3.0], [2.5, 4.5, 6.5]) == pytest.approx((2.0, 0.5))
    with caplog.at_level(logging.WARNING):
        scale, offset = fit([0.2, 0.4, 0.6], [1.9, 1.2, 1.0])
    assert scale > 0 and offset == 0.0 and "proportional" in caplog.text
    assert fit([0.5], [1.5]) == pytest.approx((3.0, 0.0))


def test_fit_weighs_small_models_by_their_relative_error():
    """Speed-ups are ratios: where no line passes through every anchor, the fit splits the misses in proportion to
    each model's time, so the small anchor is not sacrificed to the big one (an unweighted line misses the 1 ms
    model by 37% to stay within 3% of the 10 ms one; this one misses no anchor by more than 13%)."""
    raw, measured = [1.0, 5.0, 10.0], [1.0, 4.0, 10.0]
    scale, offset = fit(raw, measured)
    rel = [abs((scale * r + offset) / m - 1) for r, m in zip(raw, measured, strict=True)]
    plain = np.polyval(np.polyfit(raw, measured, 1), raw) / np.asarray(measured) - 1
    assert max(rel) < 0.13 and abs(plain[0]) > 0.3


def test_agreement_ranks_and_sizes_the_error():
    """A prediction 10% high everywhere ranks perfectly but is 10% off; one swapped pair lowers the rank correlation."""
    measured = [1.0, 2.0, 3.0, 4.0]
    assert agreement([1.1 * m for m in measured], measured) == pytest.approx((1.0, 0.1))
    rho, err = agreement([1.0, 3.0, 2.0, 4.0], measured)
    assert rho == pytest.approx(0.8) and err == pytest.approx(1 / 6)  # errors 0, 1/2, 1/3, 0: median 1/6
    rho, err = agreement([2.0], [1.0])
    assert rho != rho and err != err  # NaN: one pair says nothing


def test_probes_cover_every_width_the_space_reaches(tmp_path, tiny_csv, tiny_teacher_dir):
    """A searched convert.hidden_size: its widths' blocks are probed up front and one narrow anchor joins the fit
    (blocks of another width are another share of the whole model)."""
    from compress.modeling.loading import load_config
    from compress.recipe import load_recipe
    from compress.study.latency import probes
    from conftest import write_recipe

    space = {"passes.convert.groups": {"groups": [1, 2]}, "passes.convert.hidden_size": {"choices": [None, 16]}}
    recipe = load_recipe(write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, space=space))
    assert recipe.search is not None
    config = load_config(recipe.teacher.model, recipe.teacher.revision)
    found, anchors = probes(recipe, recipe.search, config)
    d = config.hidden_size // config.num_attention_heads
    assert {a.hidden for a in found} == {config.hidden_size, 16} == {a.hidden for a in anchors}
    assert all(a.heads == [16 // d] * len(a.heads) for a in [*found, *anchors] if a.hidden == 16)
    narrow = {k for a in found if a.hidden == 16 for k in plan(a)}
    assert any(k.startswith("ffn:hidden=16") for k in narrow) and any(k.startswith("qkv:hidden=16") for k in narrow)


def test_probes_anchor_the_smallest_corner_of_the_space(tmp_path, tiny_csv, tiny_teacher_dir):
    """The fit must not extrapolate below its anchors: the fewest layers, narrowest width and smallest FFN the space
    reaches make one anchor."""
    from compress.modeling.loading import load_config
    from compress.recipe import load_recipe
    from compress.study.latency import probes
    from conftest import write_recipe

    space = {
        "passes.convert.layers": {"choices": [1, 2]},
        "passes.convert.hidden_size": {"choices": [None, 16]},
        "passes.convert.intermediate_size": {"choices": [None, 32]},
    }
    recipe = load_recipe(write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, space=space))
    assert recipe.search is not None
    config = load_config(recipe.teacher.model, recipe.teacher.revision)
    _, anchors = probes(recipe, recipe.search, config)
    d = config.hidden_size // config.num_attention_heads
    assert any(a.hidden == 16 and a.ffn == 32 and a.heads == [16 // d] for a in anchors)
    assert len(anchors) == len(set(map(str, anchors)))


def test_whole_models_are_timed_per_input(tokenizer):
    """A whole model's timed call runs every input in turn (natural lengths: one text each); its time is per input."""
    import time

    target = TARGETS["onnxruntime-int8"]
    fp = fingerprint(target, seq=16, batch=1, threads=1, shape="natural")
    inputs = [real_inputs(tokenizer, ["a short text"], 1, n) for n in (4, 9, 16)]
    seen: list[int] = []

    def teacher(b):
        seen.append(b["input_ids"].shape[1])
        time.sleep(0.004)

    model = calibrate(target, fp, [], [], {"teacher": teacher}, inputs, runs=5)
    assert 3.9 < model.teacher_ms["teacher"] < 6.0  # 4 ms per input, not 12 per call
    assert set(seen) == {4, 9, 16} and model.fingerprint.shape == "natural"
