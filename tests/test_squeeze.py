"""BERT -> SqueezeBERT conversion: exactness, permutation invariance, energy, validation, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import SqueezeBertForSequenceClassification

from compress.convert.build import build_student, convert, dense_layers, select_layers
from compress.convert.perms import identity_perms, retained_energy, search_perms
from compress.core.errors import CompressError
from compress.core.groups import Groups, check_groups
from conftest import tiny_bert

PAPER = Groups(4, 4, 4, 1, 4, 4)


def _inputs(tokenizer):
    return tokenizer(["the movie was great fun", "awful service, slow food", "ok"], padding=True, return_tensors="pt")


@torch.no_grad()
def test_groups_one_is_exact(tokenizer):
    teacher = tiny_bert(layers=3)
    student, report = convert(teacher, init="identity")
    x = _inputs(tokenizer)
    assert (student(**x).logits - teacher(**x).logits).abs().max() < 1e-5
    assert isinstance(student, SqueezeBertForSequenceClassification) and report["layers"] == [0, 1, 2]


@torch.no_grad()
def test_permutations_preserve_the_function(tokenizer):
    """Reordering heads, FFN channels and the residual stream is exact before blocks are cut."""
    teacher = tiny_bert(layers=2)
    dense = dense_layers(teacher, [0, 1])
    perms = search_perms(dense, PAPER, heads=4)
    assert not np.array_equal(perms.hidden, np.arange(32)) and not all(
        np.array_equal(p, np.arange(64)) for p in perms.ffn
    )
    student = build_student(teacher, dense, perms, Groups())
    x = _inputs(tokenizer)
    assert (student(**x).logits - teacher(**x).logits).abs().max() < 1e-5


def test_permuted_blocks_keep_more_energy_than_identity():
    teacher = tiny_bert(layers=2)
    dense = dense_layers(teacher, [0, 1])
    perms = search_perms(dense, PAPER, heads=4)
    found = retained_energy(dense, perms, PAPER, 4)
    base = retained_energy(dense, identity_perms(32, 4, 64, 2), PAPER, 4)
    for f, b in zip(found, base, strict=True):
        assert sum(f.values()) > sum(b.values())
        assert f["post_attention"] == pytest.approx(1.0)  # one group keeps everything
    assert all(abs(v - 0.25) < 0.05 for v in base[0].values() if v < 1)  # identity keeps ~1/g of random weights


@torch.no_grad()
def test_grouped_student_runs_saves_and_loads(tmp_path, tokenizer):
    teacher = tiny_bert(layers=3)
    student, report = convert(teacher, layers=2, groups=PAPER, intermediate_size=32)
    assert report["layers"] == [1, 2] and student.config.q_groups == 4 and student.config.intermediate_size == 32
    assert len(report["energy_kept_per_layer"]) == 2
    assert all(
        a >= b for a, b in zip(report["energy_kept_per_layer"], report["energy_kept_identity_per_layer"], strict=True)
    )
    student.save_pretrained(tmp_path)
    again = SqueezeBertForSequenceClassification.from_pretrained(tmp_path).eval()
    x = _inputs(tokenizer)
    assert torch.equal(again(**x).logits, student(**x).logits)
    conv = again.transformer.encoder.layers[0].intermediate.conv1d
    assert conv.groups == 4 and tuple(conv.weight.shape) == (32, 8, 1)


def test_group_counts_must_divide_channels():
    with pytest.raises(
        ValueError,
        match=(
            r"groups.intermediate=5 must divide its 384 input and 1536 output channels; valid: 1, 2, 3, 4, 6, 8, "
            r"12, 16"
        ),
    ):
        check_groups(Groups(1, 1, 1, 1, 5, 1), 384, 1536)
    with pytest.raises(ValueError, match="expected six integers"):
        Groups.parse("4,4,4")
    # what convert() raises: the user's error, one line
    with pytest.raises(CompressError, match=r"groups.q=3 must divide"):
        convert(tiny_bert(), groups=Groups(3, 1, 1, 1, 1, 1))
    assert (
        str(Groups.parse(" 4,4, 4,1,4,4")) == "4,4,4,1,4,4"
        and Groups.of(SqueezeBertForSequenceClassification.config_class(q_groups=2)).q == 2
    )


def test_layer_selection():
    assert (
        select_layers(6, 3) == [1, 3, 5]
        and select_layers(6, None) == list(range(6))
        and select_layers(6, [4, 0]) == [0, 4]
    )
    for bad in (0, 7):
        with pytest.raises(CompressError, match="keep between 1 and 6 layers"):
            select_layers(6, bad)
    with pytest.raises(CompressError, match=r"distinct indices in 0\.\.5"):
        select_layers(6, [1, 6])


def test_random_init_and_bad_options():
    teacher = tiny_bert(layers=2)
    student, report = convert(teacher, groups=PAPER, init="random")
    assert report["init"] == "random" and student.config.num_hidden_layers == 2
    with pytest.raises(CompressError, match="intermediate_size=128: must be between 1 and the teacher's 64"):
        convert(teacher, intermediate_size=128)


@pytest.mark.integration
@torch.no_grad()
def test_embedded_teacher_converts_exactly(tokenizer):
    from compress.modeling.loading import load_teacher
    from compress.recipe.teacher import TeacherSpec

    teacher = load_teacher(TeacherSpec(), ["negative", "neutral", "positive"]).eval()
    student, _ = convert(teacher, init="identity")
    x = _inputs(tokenizer)
    assert (student(**x).logits - teacher(**x).logits).abs().max() <= 1e-4


@torch.no_grad()
def test_least_squares_fit_brings_the_student_closer(tokenizer):
    """On the calibration data, the fitted blocks reproduce the teacher better than the plain cut."""
    from conftest import make_rows

    teacher = tiny_bert(layers=2, seed=1)
    texts = make_rows(64)["text"].tolist()
    calib = [dict(tokenizer(texts[i : i + 16], padding=True, return_tensors="pt")) for i in range(0, 64, 16)]
    fitted, report = convert(teacher, groups=PAPER, calib_batches=calib)
    plain, _ = convert(teacher, groups=PAPER)
    assert report["least_squares_fit"]
    err = lambda s: sum(float(((s(**b).logits - teacher(**b).logits) ** 2).mean()) for b in calib)
    assert err(fitted) < err(plain)


@torch.no_grad()
def test_narrow_ffn_from_activations_beats_the_weight_cut(tokenizer):
    """A dense student with a halved FFN: channels chosen by output energy on task text and the output matrix
    refitted reproduce the teacher better than the weights-only cut (same kept width)."""
    from conftest import make_rows

    teacher = tiny_bert(layers=2, seed=3)
    texts = make_rows(64)["text"].tolist()
    calib = [dict(tokenizer(texts[i : i + 16], padding=True, return_tensors="pt")) for i in range(0, 64, 16)]
    ffn = teacher.config.intermediate_size // 2
    fitted, report = convert(teacher, intermediate_size=ffn, calib_batches=calib)
    plain, _ = convert(teacher, intermediate_size=ffn)
    assert report["least_squares_fit"] and fitted.config.intermediate_size == plain.config.intermediate_size == ffn
    err = lambda s: sum(float(((s(**b).logits - teacher(**b).logits) ** 2).mean()) for b in calib)
    assert err(fitted) < err(plain)


@torch.no_grad()
def test_narrow_student_is_the_teachers_channels_and_heads(tmp_path, tokenizer):
    """hidden_size: a student with fewer residual channels and heads (head size kept) whose every weight is the
    teacher's at the channels and heads the report names; it reloads as a plain transformers model."""
    from conftest import make_rows

    teacher = tiny_bert(layers=2, hidden=32, heads=4, seed=4)  # head size 8
    texts = make_rows(32)["text"].tolist()
    calib = [dict(tokenizer(texts[i : i + 16], padding=True, return_tensors="pt")) for i in range(0, 32, 16)]
    for batches in (None, calib):  # scores from weights only, and from activations on task text
        student, report = convert(teacher, hidden_size=16, init="identity", calib_batches=batches)
        c = student.config
        assert (c.hidden_size, c.embedding_size, c.num_attention_heads) == (16, 16, 2) and report["hidden_size"] == 16
        hid, heads = torch.tensor(report["hidden_order"]), report["head_orders"]
        assert len(hid) == 16 == len(set(hid.tolist())) and all(len(h) == 2 for h in heads)
        rows = torch.tensor([h * 8 + j for h in heads[0] for j in range(8)])
        t0, s0 = teacher.bert.encoder.layer[report["layers"][0]], student.transformer.encoder.layers[0]
        assert torch.equal(s0.attention.query.weight[..., 0], t0.attention.self.query.weight[rows][:, hid])
        assert torch.equal(s0.output.conv1d.weight[..., 0], t0.output.dense.weight[hid])
        words = teacher.bert.embeddings.word_embeddings.weight[:, hid]
        assert torch.equal(student.transformer.embeddings.word_embeddings.weight, words)
        assert torch.isfinite(student(**_inputs(tokenizer)).logits).all()
    student.save_pretrained(tmp_path)
    again = SqueezeBertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert torch.equal(again(**_inputs(tokenizer)).logits, student(**_inputs(tokenizer)).logits)
    grouped, _ = convert(teacher, hidden_size=16, groups=Groups(2, 2, 2, 1, 2, 2), calib_batches=calib)
    assert grouped.config.q_groups == 2 and torch.isfinite(grouped(**_inputs(tokenizer)).logits).all()
    with pytest.raises(CompressError, match=r"hidden_size=20: use a multiple of the teacher's head size 8 up to"):
        convert(teacher, hidden_size=20)
    convert(teacher, groups=Groups(1, 1, 1, 1, 16, 1))  # valid at the full width, not at 8 channels:
    with pytest.raises(CompressError, match=r"hidden_size 8, heads 1: groups.intermediate=16 must divide its 8 input"):
        convert(teacher, hidden_size=8, groups=Groups(1, 1, 1, 1, 16, 1))
