"""Teacher loading: embedded, local, non-BERT, offline hub id, corrupt checkpoints."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import DistilBertConfig, DistilBertModel

from compress.core.errors import CompressError
from compress.modeling.loading import load_student, load_teacher, select_device
from compress.recipe.teacher import TeacherSpec


def test_embedded_teacher_is_real_minilm_with_new_head():
    t = load_teacher(TeacherSpec(), ["a", "b", "c"])
    assert t.config.model_type == "bert" and t.config.num_hidden_layers == 6 and t.config.hidden_size == 384
    assert t.config.id2label == {0: "a", 1: "b", 2: "c"} and t.classifier.out_features == 3


def test_local_folder(tiny_teacher_dir):
    t = load_teacher(TeacherSpec(model=str(tiny_teacher_dir)), ["x", "y"])
    assert t.config.hidden_size == 32 and t.num_labels == 2


def test_non_bert_teacher(tmp_path):
    DistilBertModel(DistilBertConfig(dim=32, hidden_dim=64, n_layers=1, n_heads=2)).save_pretrained(tmp_path)
    with pytest.raises(CompressError, match="is a 'distilbert' model; compress converts BERT teachers only"):
        load_teacher(TeacherSpec(model=str(tmp_path)), ["a", "b"])


def test_hub_id_offline():
    with pytest.raises(
        CompressError, match=r"'bert-base-uncased' is not a local folder and the Hugging Face hub is offline"
    ):
        load_teacher(TeacherSpec(model="bert-base-uncased"), ["a", "b"])


def test_corrupt_checkpoint_and_config(tmp_path, tiny_teacher_dir):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_teacher_dir, bad)
    (bad / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CompressError, match=r"weights could not be loaded .*re-save it with save_pretrained"):
        load_teacher(TeacherSpec(model=str(bad)), ["a", "b"])
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CompressError, match=r"cannot read config.json .*not a valid JSON.*re-save the model"):
        load_teacher(TeacherSpec(model=str(bad)), ["a", "b"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CompressError, match=r"folder has no config\.json"):
        load_student(empty)


def test_device_selection():
    assert select_device("cpu", None).type == "cpu"
    assert select_device("auto", None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(CompressError, match="no CUDA GPU is visible"):
            select_device("cuda", None)
