"""Distillation: teacher-output cache (hit, corrupt, mismatched), losses, and bad options."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_rows, tiny_bert
from pydantic import ValidationError

from compress.core.errors import CompressError
from compress.data.encoding import encode
from compress.passes.distill import Distill
from compress.pipeline.registry import resolve_passes
from compress.train.teacher_cache import load_or_compute


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
    assert torch.equal(a.logits, b.logits) and torch.equal(a.hidden[2], b.hidden[2]) and torch.equal(a.attention[0], b.attention[0])
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


def _state(tmp_path, tiny_csv, tiny_teacher_dir, passes):
    from conftest import tiny_recipe

    from compress.pipeline.runner import _initial_state
    from compress.recipe import parse_recipe

    recipe = parse_recipe(tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, passes))
    return recipe, _initial_state(recipe, tmp_path / "out")


def test_hidden_map_naming_missing_layer(tmp_path, tiny_csv, tiny_teacher_dir):
    recipe, state = _state(
        tmp_path, tiny_csv, tiny_teacher_dir, [{"name": "convert"}, {"name": "distill", "options": {"hidden_weight": 1, "hidden_map": [[1, 9]]}}]
    )
    (conv, cc), (dist, dc) = resolve_passes(recipe)
    state = conv().run(state, cc)
    with pytest.raises(CompressError, match=r"hidden_map pair \[1, 9\] names a layer that does not exist: student has 0..2, teacher 0..2"):
        dist().run(state, dc)


def test_student_with_other_tokenizer_is_refused(tmp_path, tiny_csv, tiny_teacher_dir, tokenizer):
    from transformers import BertTokenizerFast

    other = tmp_path / "other"
    other.mkdir()
    (other / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]))
    BertTokenizerFast(vocab_file=str(other / "vocab.txt")).save_pretrained(other)
    tiny_bert().save_pretrained(other)
    recipe, state = _state(tmp_path, tiny_csv, tiny_teacher_dir, [{"name": "distill", "options": {"student_path": str(other)}}])
    ((dist, dc),) = resolve_passes(recipe)
    with pytest.raises(CompressError, match="uses a different tokenizer than the teacher"):
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
            [{"name": "convert", "options": {"groups": "2,2,2,1,2,2"}}, {"name": "distill", "options": opts | {"cache_teacher": cache}}],
        )
        for cls, cfg in resolve_passes(recipe):
            state = cls().run(state, cfg)
        results[cache] = state.reports["distill"]["student"]
    assert results[True]["teacher_cache"] in ("miss", "hit") and results[False]["teacher_cache"] == "off"
    l1, l2 = results[True]["history"][0]["train_loss"], results[False]["history"][0]["train_loss"]
    assert l1 == pytest.approx(l2, rel=1e-2) and l1 > 0
