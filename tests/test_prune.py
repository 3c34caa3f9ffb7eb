"""Structured pruning on tiny random models: shapes, group validity, reload in plain transformers, ONNX, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from compress.convert.build import convert
from compress.core.arch import Architecture
from compress.core.errors import CompressError
from compress.core.groups import Groups
from compress.core.records import Conversion
from compress.deploy.flops import flops_per_sequence
from compress.deploy.latency_model import anchor_model
from compress.deploy.matmul_form import EncoderForInference
from compress.modeling.squeezebert import head_segments
from compress.passes.prune import _narrowed
from compress.prune.ffn import check_squeeze_ratio, prune_bert_ffn, prune_squeezebert_ffn
from compress.prune.heads import original_heads, plan_heads
from compress.prune.importance import head_scores
from conftest import run_metrics, tiny_bert, write_tiny_recipe


def _batch(n: int = 4, seq: int = 12, labels: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (n, seq), generator=g)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "labels": torch.arange(n) % labels,
    }


def _logits(model, b):
    with torch.no_grad():
        return model(
            input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"]
        ).logits


def test_bert_heads_and_ffn_reload_and_export(tmp_path):
    model, b = tiny_bert(layers=2, hidden=32, heads=4, ffn=64), _batch()
    model.prune_heads(
        plan_heads([torch.tensor([3.0, 1.0, 2.0, 4.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])], 0.25, "layer")
    )
    assert model.config.pruned_heads == {0: [1], 1: [0]}
    prune_bert_ffn(model, 0.5, "magnitude", b)
    assert model.config.intermediate_size == 32 and model.bert.encoder.layer[1].output.dense.in_features == 32
    model.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()  # plain transformers
    assert torch.allclose(_logits(model, b), _logits(again, b), atol=1e-6)
    # our ONNX inference form follows per-layer head counts
    assert torch.allclose(
        EncoderForInference(model)(b["input_ids"], b["attention_mask"], b["token_type_ids"]),
        _logits(model, b),
        atol=1e-5,
    )
    full = tiny_bert(layers=2, hidden=32, heads=4, ffn=64).config
    assert flops_per_sequence(model.config, 128) < flops_per_sequence(full, 128)


def test_ffn_pruning_keeps_the_strongest_channels():
    model, b = tiny_bert(layers=1, hidden=32, heads=4, ffn=64), _batch()
    dense = model.bert.encoder.layer[0].intermediate.dense
    with torch.no_grad():
        dense.weight[:8] *= 100  # channels 0..7 are by far the largest
    prune_bert_ffn(model, 0.75, "magnitude", b)
    kept = model.bert.encoder.layer[0].intermediate.dense.weight
    assert kept.shape[0] == 16 and (kept.abs().max(1).values > 1).sum() == 8


def test_squeezebert_ffn_pruning_respects_groups(tmp_path):
    teacher = tiny_bert(layers=2, hidden=32, heads=4, ffn=64)
    student, _ = convert(teacher, None, Groups(2, 2, 2, 1, 4, 2), None, "identity")
    b = _batch()
    ref = student.transformer.encoder.layers[0]
    w_in, w_out = ref.intermediate.conv1d.weight.detach().clone(), ref.output.conv1d.weight.detach().clone()
    # 16 of 64 channels; lcm(4, 2) = 4 segments of 16, 4 removed from each
    prune_squeezebert_ffn(student, 0.25, "magnitude")
    layer = student.transformer.encoder.layers[0]
    assert (
        student.config.intermediate_size == 48
        and layer.intermediate.conv1d.groups == 4
        and layer.output.conv1d.groups == 2
    )
    assert layer.intermediate.conv1d.weight.shape == (48, 8, 1) and layer.output.conv1d.weight.shape == (32, 24, 1)
    # every kept row is an original row, and the output conv reads exactly those channels
    rows = [int(torch.where((w_in == r).all(1).all(1))[0][0]) for r in layer.intermediate.conv1d.weight]
    assert rows == sorted(rows) and all(len([r for r in rows if s * 16 <= r < (s + 1) * 16]) == 12 for s in range(4))
    for G in range(2):
        local = [r - G * 32 for r in rows if G * 32 <= r < (G + 1) * 32]
        assert torch.equal(layer.output.conv1d.weight[G * 16 : (G + 1) * 16], w_out[G * 16 : (G + 1) * 16][:, local])
    student.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert torch.allclose(_logits(student, b), _logits(again, b), atol=1e-6)


def test_squeezebert_heads_prune_reload_and_export(tmp_path):
    """Pruning a head equals silencing it (its value rows zeroed), in torch, after a reload and in the export form."""
    teacher = tiny_bert(layers=2, hidden=32, heads=4, ffn=64)
    student, _ = convert(teacher, None, Groups(2, 2, 2, 2, 2, 1), None, "identity")
    b = _batch(seq=16)
    scores = head_scores(student, "magnitude")
    assert [len(s) for s in scores] == [4, 4] and head_segments(student.config) == 2
    plan = plan_heads([torch.tensor([1.0, 2.0, 0.5, 4.0]), torch.tensor([3.0, 1.0, 2.0, 0.1])], 0.5, "layer", 2)
    assert plan == {0: [0, 2], 1: [1, 3]}  # the weaker head of each group's pair
    silenced = copy.deepcopy(student)
    for i, heads in plan.items():
        v = silenced.transformer.encoder.layers[i].attention.value
        with torch.no_grad():
            for h in heads:  # head size 8
                v.weight[h * 8 : (h + 1) * 8] = 0
                v.bias[h * 8 : (h + 1) * 8] = 0
    student.prune_heads(plan)
    layer = student.transformer.encoder.layers[0]
    assert layer.attention.query.weight.shape == (16, 16, 1) and layer.post_attention.conv1d.weight.shape == (32, 8, 1)
    assert torch.allclose(_logits(student, b), _logits(silenced, b), atol=1e-5)
    assert Architecture.of(student.config).heads == [2, 2]
    student.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()  # rebuilt from config.pruned_heads
    assert torch.allclose(_logits(student, b), _logits(again, b), atol=1e-6)
    form = EncoderForInference(student)
    assert torch.allclose(
        form(b["input_ids"], b["attention_mask"], b["token_type_ids"]), _logits(student, b), atol=1e-5
    )
    full = tiny_bert(layers=2, hidden=32, heads=4, ffn=64).config
    assert flops_per_sequence(student.config, 128) < flops_per_sequence(full, 128)


def test_second_head_pruning_counts_original_indices():
    student, _ = convert(
        tiny_bert(layers=1, hidden=32, heads=4, ffn=64), None, Groups(1, 1, 1, 1, 2, 2), None, "identity"
    )
    student.prune_heads({0: [1]})
    # a second plan names slots of the heads still alive (0, 2, 3); prune_heads wants original indices
    assert original_heads({0: [1]}, student.config) == {0: [2]}
    student.prune_heads(original_heads({0: [1]}, student.config))
    assert Architecture.of(student.config).heads == [2] and sorted(student.config.pruned_heads[0]) == [1, 2]


def test_pruned_students_attention_targets_follow_the_heads_kept():
    orders = [[3, 1, 0, 2], [0, 1, 2, 3]]  # student slot -> teacher head
    conv = Conversion(teacher_layers=[1, 3], groups={}, intermediate_size=64, init="permuted", head_orders=orders)
    config = tiny_bert(layers=2).config
    once = _narrowed(conv, {0: [1, 2], 1: [0]}, config)  # slots 1, 2 of layer 0: teacher heads 1 and 0
    assert once.head_orders == [[3, 2], [1, 2, 3]]
    assert _narrowed(once, {0: [1]}, config).head_orders == [[3], [1, 2, 3]]  # then slot 1 of the two left
    identity = conv.model_copy(update={"head_orders": []})  # no order recorded: the teacher's
    assert _narrowed(identity, {1: [0, 3]}, config).head_orders == [[0, 1, 2, 3], [1, 2]]


def test_squeezebert_heads_stay_even_over_groups():
    student, _ = convert(
        tiny_bert(layers=1, hidden=32, heads=4, ffn=64), None, Groups(2, 2, 2, 2, 1, 1), None, "identity"
    )
    with pytest.raises(CompressError, match="must keep the same number of heads"):
        student.prune_heads({0: [0, 1]})  # both heads of group 0
    with pytest.raises(CompressError, match=r"cannot lose evenly.*valid ratios: 0\.5"):
        plan_heads([torch.ones(4)], 0.25, "layer", 2)
    with pytest.raises(CompressError, match="use scope: layer"):
        plan_heads([torch.ones(4)], 0.5, "global", 2)
    odd, _ = convert(tiny_bert(layers=1, hidden=48, heads=6, ffn=64), None, Groups(4, 4, 4, 4, 1, 1), None, "identity")
    with pytest.raises(CompressError, match="do not split evenly"):
        odd.prune_heads({0: [0]})


def test_latency_anchor_with_pruned_heads():
    arch = Architecture(
        hidden=64, head_size=16, heads=[2, 4], ffn=128, groups=dict(Groups(1, 1, 1, 1, 2, 2).as_dict()), labels=2
    )
    assert Architecture.of(anchor_model(arch).config) == arch


def test_bad_ratios():
    student, _ = convert(
        tiny_bert(layers=1, hidden=32, heads=4, ffn=64), None, Groups(1, 1, 1, 1, 4, 4), None, "identity"
    )
    with pytest.raises(CompressError, match=r"nearest valid ratio: 0\.125 \(8 channels\)"):
        check_squeeze_ratio(student.config, 0.11)  # 7 channels cannot be shared by 4 groups
    assert check_squeeze_ratio(student.config, 0.125) == 8
    with pytest.raises(CompressError, match="removes every head of layer 0"):
        plan_heads([torch.tensor([1.0, 2.0, 3.0, 4.0])], 0.9, "layer")
    with pytest.raises(CompressError, match=r"removes every head of layer 0.*scope: layer"):
        plan_heads([torch.tensor([1.0, 1.0]), torch.tensor([1.0, 100.0])], 0.75, "global")
    assert plan_heads([torch.tensor([1.0, 1.0]), torch.tensor([1.0, 100.0])], 0.5, "global") == {0: [0], 1: [0]}


@pytest.mark.integration
def test_prune_pass_distill_export_reload(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    passes = [
        {
            "name": "prune",
            "options": {"ffn_ratio": 0.5, "head_ratio": 0.25, "importance": "taylor", "taylor_samples": 32},
        },
        {"name": "distill", "options": {"epochs": 1, "students": ["pruned"]}},
        {"name": "export", "options": {"models": ["pruned"]}},
        {"name": "evaluate", "options": {"models": ["pruned*"]}},
    ]
    code, _, err = cli("run", write_tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, passes))
    assert code == 0, err
    run, m = run_metrics(tmp_path)
    p = m.reports["prune"]["pruned"]
    assert (
        p["heads_per_layer"] == [3, 3] and p["intermediate_size"] == 32 and p["after"]["params"] < p["before"]["params"]
    )
    assert m.reports["export"]["pruned"]["max_abs_diff"] < 1e-4 and "pruned.onnx" in m.evaluations
    assert AutoModelForSequenceClassification.from_pretrained(run / "models" / "pruned").config.pruned_heads


@pytest.mark.integration
def test_student_heads_pruned_then_distilled_with_attention_maps(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    """convert -> prune heads of the SqueezeBERT student -> distill with attention maps (each kept head learns from
    its own teacher head) -> export; the pruned student reloads."""
    passes = [
        {"name": "convert", "options": {"student": "s", "groups": "1,1,1,1,2,2", "fit_samples": 32}},
        {"name": "prune", "options": {"model": "s", "output": "s-h2", "head_ratio": 0.5, "importance": "taylor"}},
        {"name": "distill", "options": {"epochs": 1, "students": ["s-h2"], "attention_weight": 1, "hidden_weight": 1}},
        {"name": "export", "options": {"models": ["s-h2"], "targets": ["onnx", "openvino"], "int8": True}},
    ]
    code, _, err = cli("run", write_tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, passes))
    assert code == 0, err
    run, m = run_metrics(tmp_path)
    p = m.reports["prune"]["s-h2"]
    assert p["heads_per_layer"] == [2, 2] and p["after"]["gflops"] < p["before"]["gflops"]
    assert m.reports["export"]["s-h2"]["max_abs_diff"] < 1e-4
    again = AutoModelForSequenceClassification.from_pretrained(run / "models" / "s-h2")
    assert Architecture.of(again.config).heads == [2, 2]
    assert {k: len(v) for k, v in p["heads_removed"].items()} == {"0": 2, "1": 2}


@pytest.mark.parametrize(
    "options,needle",
    [
        ({"ffn_ratio": 1.0}, "less than 1"),
        ({"ffn_ratio": -0.1}, "greater than or equal to 0"),
        ({"head_ratio": 0.9}, "removes every head"),
        ({"head_ratio": 0.25, "model": "student"}, "not in this run"),
    ],
)
def test_prune_bad_input(tmp_path, tiny_csv, tiny_teacher_dir, cli, options, needle):
    code, _, err = cli(
        "run", write_tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, [{"name": "prune", "options": options}])
    )
    assert code == 2 and needle in err, err


def test_uneven_head_pruning_of_a_grouped_student_fails_in_one_line(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    passes = [
        {"name": "convert", "options": {"student": "s", "groups": "2,2,2,2,2,2", "fit_samples": 32}},
        {"name": "prune", "options": {"model": "s", "head_ratio": 0.25}},  # 1 of 4 heads: 2 groups cannot share it
    ]
    code, _, err = cli("run", write_tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, passes))
    assert code == 2 and "cannot lose evenly" in err and "valid ratios: 0.5" in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # after the run's log
    assert errors == [err.strip().splitlines()[-1]]
