"""Distillation: teacher-output cache (hit, corrupt, mismatched), losses, and bad options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from compress.core.errors import CompressError
from compress.data.encoding import encode
from compress.passes.distill import Distill
from compress.pipeline.registry import resolve_passes
from compress.train.teacher_cache import load_or_compute
from conftest import make_rows, tiny_bert


@pytest.fixture
def train_enc(tokenizer):
    df = make_rows(40).rename(columns={"sentiment": "label"})
    df["label"] = df["label"].map({"negative": 0, "neutral": 1, "positive": 2})
    return encode(df[["text", "label"]], tokenizer, 16, None)


def test_cache_hit_returns_identical_outputs(tmp_path, train_enc):
    teacher = tiny_bert()
    a, s1 = load_or_compute(teacher, train_enc, torch.device("cpu"), tmp_path, hidden=[1, 2], attention=[0])
    b, s2 = load_or_compute(teacher, train_enc, torch.device("cpu"), tmp_path, hidden=[1, 2], attention=[0])
    assert (s1, s2) == ("miss", "hit")
    assert (
        torch.equal(a.logits, b.logits)
        and torch.equal(a.hidden[2], b.hidden[2])
        and torch.equal(a.attention[0], b.attention[0])
    )
    # the ragged store gives back exactly what the teacher computes for a padded batch
    idx = torch.tensor([3, 7])
    ids = [train_enc.input_ids[train_enc.offsets[i] : train_enc.offsets[i + 1]] for i in idx]
    width = max(len(x) for x in ids)
    got = b.batch(idx, width)
    with torch.no_grad():
        x = torch.zeros(2, width, dtype=torch.long)
        m = torch.zeros(2, width, dtype=torch.long)
        for r, t in enumerate(ids):
            x[r, : len(t)] = torch.from_numpy(t.astype("int64"))
            m[r, : len(t)] = 1
        ref = teacher(input_ids=x, attention_mask=m, output_hidden_states=True)
    n0 = len(ids[0])
    assert torch.allclose(got["logits"], ref.logits, atol=1e-5)
    assert torch.allclose(got["hidden"][2][0, :n0], ref.hidden_states[2][0, :n0], atol=2e-3)


def test_other_teacher_weights_use_another_entry(tmp_path, train_enc):
    load_or_compute(tiny_bert(seed=0), train_enc, torch.device("cpu"), tmp_path, [], [])
    _, status = load_or_compute(tiny_bert(seed=1), train_enc, torch.device("cpu"), tmp_path, [], [])
    assert status == "miss" and len(list((tmp_path / "teacher_outputs").glob("*.safetensors"))) == 2


@pytest.mark.parametrize("damage", ["flip_bytes", "wrong_key", "missing_meta"])
def test_corrupt_or_mismatched_cache_is_rebuilt(tmp_path, train_enc, damage):
    teacher = tiny_bert()
    good, _ = load_or_compute(teacher, train_enc, torch.device("cpu"), tmp_path, [], [])
    (path,) = (tmp_path / "teacher_outputs").glob("*.safetensors")
    meta = path.with_suffix(".json")
    if damage == "flip_bytes":
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "wrong_key":
        meta.write_text(json.dumps(json.loads(meta.read_text()) | {"key": "0" * 16}))
    else:
        meta.unlink()
    again, status = load_or_compute(teacher, train_enc, torch.device("cpu"), tmp_path, [], [])
    assert status.startswith("rebuilt") and torch.equal(again.logits, good.logits)
    assert load_or_compute(teacher, train_enc, torch.device("cpu"), tmp_path, [], [])[1] == "hit"


def test_bad_options_are_rejected():
    with pytest.raises(ValidationError, match="temperature"):
        Distill.Config(temperature=0)
    with pytest.raises(ValidationError, match="alpha"):
        Distill.Config(alpha=1.5)
    with pytest.raises(ValidationError, match="alpha"):
        Distill.Config(alpha=-0.1)
    with pytest.raises(ValidationError, match="intermediate_epochs needs hidden_weight or attention_weight"):
        Distill.Config(intermediate_epochs=2)
    with pytest.raises(ValidationError, match="augment_prob"):
        Distill.Config(augment=2, augment_prob=0)


def _state(tmp_path, tiny_csv, tiny_teacher_dir, passes):
    from compress.pipeline.runner import _initial_state
    from compress.recipe import parse_recipe
    from conftest import tiny_recipe

    recipe = parse_recipe(tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, passes))
    return recipe, _initial_state(recipe, tmp_path / "out")


def test_hidden_map_naming_missing_layer(tmp_path, tiny_csv, tiny_teacher_dir):
    recipe, state = _state(
        tmp_path,
        tiny_csv,
        tiny_teacher_dir,
        [{"name": "convert"}, {"name": "distill", "options": {"hidden_weight": 1, "hidden_map": [[1, 9]]}}],
    )
    (conv, cc), (dist, dc) = resolve_passes(recipe)
    state = conv().run(state, cc)
    with pytest.raises(
        CompressError,
        match=r"hidden_map pair \[1, 9\] names a layer that does not exist: student has 0..2, teacher 0..2",
    ):
        dist().run(state, dc)


def test_student_with_other_tokenizer_is_refused(tmp_path, tiny_csv, tiny_teacher_dir, tokenizer):
    from transformers import BertTokenizerFast

    other = tmp_path / "other"
    other.mkdir()
    (other / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]))
    BertTokenizerFast(vocab_file=str(other / "vocab.txt")).save_pretrained(other)
    tiny_bert().save_pretrained(other)
    recipe, state = _state(
        tmp_path, tiny_csv, tiny_teacher_dir, [{"name": "distill", "options": {"student_path": str(other)}}]
    )
    ((dist, dc),) = resolve_passes(recipe)
    with pytest.raises(CompressError, match="uses a different tokenizer than the teacher"):
        dist().run(state, dc)


def test_pruned_student_from_a_folder_cannot_match_attention_maps(tmp_path, tiny_csv, tiny_teacher_dir, tokenizer):
    folder = tmp_path / "pruned"
    pruned = tiny_bert(layers=2)
    pruned.prune_heads({0: [1]})  # no record of which teacher head each kept head was
    pruned.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    options = {"student_path": str(folder), "attention_weight": 1}
    recipe, state = _state(tmp_path, tiny_csv, tiny_teacher_dir, [{"name": "distill", "options": options}])
    ((dist, dc),) = resolve_passes(recipe)
    with pytest.raises(CompressError, match=r"layer 0 has 3 heads, teacher layer 0 4.*set attention_weight: 0"):
        dist().run(state, dc)


def test_distill_without_student_says_add_convert(tmp_path, tiny_csv, tiny_teacher_dir):
    recipe, state = _state(tmp_path, tiny_csv, tiny_teacher_dir, [{"name": "distill"}])
    ((dist, dc),) = resolve_passes(recipe)
    with pytest.raises(CompressError, match="add a convert pass before distill"):
        dist().run(state, dc)


def test_all_losses_train_and_cache_matches_no_cache(tmp_path, tiny_csv, tiny_teacher_dir):
    """With and without the teacher cache, the same seed gives the same training (fp16 cache aside)."""
    opts = {"epochs": 1, "hidden_weight": 1.0, "attention_weight": 1.0, "batch_size": 16}
    results = {}
    for cache in (True, False):
        recipe, state = _state(
            tmp_path,
            tiny_csv,
            tiny_teacher_dir,
            [
                {"name": "convert", "options": {"groups": "2,2,2,1,2,2"}},
                {"name": "distill", "options": opts | {"cache_teacher": cache}},
            ],
        )
        for cls, cfg in resolve_passes(recipe):
            state = cls().run(state, cfg)
        results[cache] = state.reports["distill"]["student"]
    assert results[True]["teacher_cache"] in ("miss", "hit") and results[False]["teacher_cache"] == "off"
    l1, l2 = results[True]["history"][0]["train_loss"], results[False]["history"][0]["train_loss"]
    assert l1 == pytest.approx(l2, rel=1e-2) and l1 > 0


def test_layer_stage_then_predictions_on_augmented_texts(tmp_path, tiny_csv, tiny_teacher_dir):
    """intermediate_epochs train the layer losses alone first; augment adds teacher-labelled copies of the training
    texts (KD only), cached like the rest of the teacher's outputs."""
    opts = {"epochs": 1, "intermediate_epochs": 2, "hidden_weight": 1.0, "augment": 2, "batch_size": 16}
    recipe, state = _state(
        tmp_path,
        tiny_csv,
        tiny_teacher_dir,
        [{"name": "convert", "options": {"groups": "2,2,2,1,2,2"}}, {"name": "distill", "options": opts}],
    )
    for cls, cfg in resolve_passes(recipe):
        state = cls().run(state, cfg)
    report = state.reports["distill"]["student"]
    assert len(report["history"]) == 3 and report["unlabeled_examples"] == 2 * report["examples"]
    assert report["teacher_cache"].count("extra texts") == 1


def test_distillation_on_teacher_labelled_texts(tmp_path, tiny_csv, tiny_teacher_dir):
    """Unused training rows and a text file become extra KD-only examples; bad sources are one clear line."""
    from compress.data.encoding import NO_LABEL
    from conftest import tiny_recipe

    def run(distill: dict, task: dict | None = None):
        from compress.pipeline.runner import _initial_state
        from compress.recipe import parse_recipe

        raw = tiny_recipe(
            tmp_path,
            tiny_csv,
            tiny_teacher_dir,
            [
                {"name": "convert", "options": {"groups": "2,2,2,1,2,2"}},
                {"name": "distill", "options": {"epochs": 1} | distill},
            ],
        )
        raw["task"] |= task or {}
        recipe = parse_recipe(raw)
        state = _initial_state(recipe, tmp_path / "out")
        for cls, cfg in resolve_passes(recipe):
            state = cls().run(state, cfg)
        return state

    state = run({"unlabeled": 50}, {"max_train_samples": 100})
    r = state.reports["distill"]["student"]
    assert (
        (r["examples"], r["unlabeled_examples"]) == (100, 50)
        and len(state.task.unused) == 92
        and r["history"][0]["train_loss"] > 0
    )
    texts = tmp_path / "texts.txt"
    texts.write_text("great food\n\nawful day\nok movie\n")
    state = run({"unlabeled": 10, "unlabeled_source": str(texts)})
    # blank lines skipped; fewer than asked: all used
    assert state.reports["distill"]["student"]["unlabeled_examples"] == 3
    with pytest.raises(CompressError, match="the task has no unused training rows"):
        run({"unlabeled": 5})
    with pytest.raises(CompressError, match="no such file"):
        run({"unlabeled": 5, "unlabeled_source": str(tmp_path / "nope.txt")})
    table = tmp_path / "texts.csv"
    table.write_text("body\nhello there\n")
    with pytest.raises(
        CompressError, match=r"no column 'text'; columns are \['body'\] - set distill\.unlabeled_column"
    ):
        run({"unlabeled": 5, "unlabeled_source": str(table)})
    assert (
        run({"unlabeled": 5, "unlabeled_source": str(table), "unlabeled_column": "body"}).reports["distill"]["student"][
            "unlabeled_examples"
        ]
        == 1
    )
    assert NO_LABEL == -100


def test_kd_only_batches_have_no_cross_entropy():
    from compress.data.encoding import NO_LABEL
    from compress.train.losses import DistillLoss
    from conftest import tiny_bert

    teacher, student = tiny_bert(), tiny_bert(seed=1)
    batch = {
        "input_ids": torch.randint(1000, 2000, (4, 6)),
        "attention_mask": torch.ones(4, 6, dtype=torch.long),
        "token_type_ids": torch.zeros(4, 6, dtype=torch.long),
        "labels": torch.full((4,), NO_LABEL),
    }
    loss = DistillLoss(teacher, temperature=2.0, alpha=0.5)
    kd_only = loss(student, batch)
    assert torch.isfinite(kd_only) and kd_only > 0
    batch["labels"] = torch.tensor([0, NO_LABEL, 1, NO_LABEL])
    assert loss(student, batch) > kd_only  # + (1 - alpha) * CE over the two labelled rows


def test_teacher_outputs_slice_and_concatenate_like_their_split(tmp_path, tokenizer):
    """A subset (or a concatenation) of cached outputs equals the outputs computed on that subset directly."""
    from compress.train.teacher_cache import compute
    from conftest import make_rows, tiny_bert

    teacher = tiny_bert()
    enc = encode(make_rows(40), tokenizer, 16, None)
    full = compute(teacher, enc, torch.device("cpu"), hidden=[1], attention=[0])
    idx = np.array([3, 7, 8, 20, 39])
    direct = compute(teacher, enc.subset(idx), torch.device("cpu"), hidden=[1], attention=[0])
    sliced = full.select(idx)
    assert torch.allclose(sliced.logits, direct.logits, atol=1e-6) and torch.equal(
        sliced.token_offsets, direct.token_offsets
    )
    assert torch.equal(sliced.hidden[1], direct.hidden[1]) and torch.equal(sliced.attention[0], direct.attention[0])
    joined = sliced.concat(full.select(np.array([0, 1])))
    both = compute(
        teacher, enc.subset(idx).concat(enc.subset(np.array([0, 1]))), torch.device("cpu"), hidden=[1], attention=[0]
    )
    batch = torch.arange(7)
    for k in ("hidden", "attention"):
        assert all(
            torch.allclose(joined.batch(batch, 16)[k][j], both.batch(batch, 16)[k][j], atol=1e-3)
            for j in joined.batch(batch, 16)[k]
        )
    assert torch.allclose(joined.logits, both.logits, atol=1e-6)


@torch.no_grad()
def test_intermediate_losses_line_up_permuted_channels_and_heads(tokenizer):
    """A permuted but exact student (groups 1) matches its teacher's hidden states and attention maps once the
    targets are reordered by the conversion's orders; compared channel by channel without them, it does not."""
    from compress.convert.build import build_student, dense_layers
    from compress.convert.perms import search_perms
    from compress.core.groups import Groups
    from compress.core.records import Conversion
    from compress.train.losses import DistillLoss, orders_of

    teacher = tiny_bert(layers=2).eval()
    dense = dense_layers(teacher, [0, 1])
    perms = search_perms(dense, Groups(4, 4, 4, 1, 4, 4), heads=4)
    assert not np.array_equal(perms.hidden, np.arange(len(perms.hidden)))
    assert any(not np.array_equal(h, np.arange(len(h))) for h in perms.heads)
    student = build_student(teacher, dense, perms, Groups()).eval()  # every block kept: the function is exact
    x = tokenizer(["the movie was great fun", "awful service, slow food"], padding=True, return_tensors="pt")
    batch = {**x, "labels": torch.tensor([0, 1]), "index": torch.tensor([0, 1])}
    conv = Conversion(
        teacher_layers=[0, 1],
        groups=Groups().as_dict(),
        intermediate_size=64,
        init="permuted",
        hidden_order=perms.hidden.tolist(),
        head_orders=[h.tolist() for h in perms.heads],
    )
    common = {"teacher": teacher, "temperature": 1.0, "alpha": 1.0}
    common |= {"hidden_map": [(1, 1), (2, 2)], "attention_map": [(0, 0)]}
    kd = float(DistillLoss(**common)(student, batch))  # type: ignore[arg-type]
    for weights in ({"hidden_weight": 1.0}, {"attention_weight": 1.0}):
        aligned = float(DistillLoss(**common, **weights, **orders_of(conv))(student, batch))  # type: ignore[arg-type]
        unaligned = float(DistillLoss(**common, **weights)(student, batch))  # type: ignore[arg-type]
        assert aligned - kd < 1e-4 < unaligned - kd, weights


def test_narrow_student_learns_the_teachers_kept_channels_and_heads(tmp_path, tiny_csv, tiny_teacher_dir, monkeypatch):
    """convert.hidden_size: the layer losses compare the narrowed student's channels and heads with the teacher's
    same channels and heads (no projection: a learned one would let the student's channels drift from the ones it
    was cut from); then the student exports, quantizes and is evaluated like any other."""
    opts = {"epochs": 1, "hidden_weight": 1.0, "attention_weight": 1.0, "batch_size": 16}
    passes = [
        {"name": "convert", "options": {"groups": "2,2,2,1,2,2", "hidden_size": 16}},
        {"name": "distill", "options": opts},
        {"name": "export", "options": {"models": ["student"]}},
        {"name": "quantize", "options": {}},
        {"name": "evaluate", "options": {"models": ["student.int8"], "latency": False}},
    ]
    from compress.train.losses import DistillLoss

    recipe, state = _state(tmp_path, tiny_csv, tiny_teacher_dir, passes)
    seen: list[torch.nn.ModuleDict] = []

    def spy(*args, **kwargs):
        loss = DistillLoss(*args, **kwargs)
        seen.append(loss.proj)
        return loss

    monkeypatch.setattr("compress.passes.distill.DistillLoss", spy)
    for cls, cfg in resolve_passes(recipe):
        state = cls().run(state, cfg)
    student, conv = state.students["student"], state.conversions["student"]
    teacher_width = state.teacher.config.hidden_size
    assert student.config.hidden_size == conv.hidden_size == 16 < teacher_width
    assert len(conv.hidden_order) == 16 and all(len(h) == student.config.num_attention_heads for h in conv.head_orders)
    assert seen and all(len(p) == 0 for p in seen)
    history = state.reports["distill"]["student"]["history"]
    assert np.isfinite(history[0]["train_loss"]) and "student.int8" in state.reports["quantize"]
