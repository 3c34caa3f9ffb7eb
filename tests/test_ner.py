"""Token classification (NER): CoNLL / JSON-lines readers, word-to-sub-token alignment, entity metrics against
seqeval, exact conversion of the token head, the whole chain (fine-tune -> convert -> distill -> export -> int8 ->
evaluate) on generated CoNLL folders, a tiny search, and the bad inputs of each.

No PyPI package ships English NER data (checked: seqeval, conllu, pyconll, corus, nerus, tner, pythainlp...),
so the data here is generated in CoNLL-2003's exact layout (4 columns, -DOCSTART-, blank lines)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import BertConfig, BertForTokenClassification

from compress.convert.build import build_student, convert, dense_layers
from compress.convert.perms import search_perms
from compress.core.errors import CompressError
from compress.core.groups import Groups
from compress.data.encoding import collate, encode
from compress.data.sources import load_task
from compress.deploy.matmul_form import inference_form
from compress.recipe.task import TaskSpec
from compress.tasks import metrics as m
from compress.tasks.kinds import KINDS, NO_LABEL
from conftest import WORDS, run_raw, tiny_recipe

PEOPLE = ["alice", "bob", "carol", "dave", "erin"]
PLACES = [["paris"], ["new", "york"], ["san", "francisco"], ["berlin"]]
TAGS = ["O", "B-LOC", "B-PER", "I-LOC"]


def sentence(rng: random.Random) -> list[tuple[str, str]]:
    """Four plain words, a person and a (one- or two-word) place at random positions."""
    words = [(w, "O") for w in rng.sample(WORDS, 4)]
    for entity in (
        [(rng.choice(PEOPLE), "B-PER")],
        [(w, "I-LOC" if i else "B-LOC") for i, w in enumerate(rng.choice(PLACES))],
    ):
        k = rng.randrange(len(words) + 1)
        words[k:k] = entity
    return words


def conll_folder(folder: Path, sizes=(240, 60, 60), seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "validation", "test"), sizes, strict=True):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for _ in range(n):
            lines += [f"{w} NN B-NP {t}" for w, t in sentence(rng)] + [""]
        (folder / f"{split}.txt").write_text("\n".join(lines))
    return folder


def tiny_token_bert(layers: int = 2) -> BertForTokenClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=4,
    )
    return BertForTokenClassification(config).eval()


@torch.no_grad()
def test_token_head_converts_exactly(tokenizer):
    """Groups 1 is exact, also with the residual stream permuted (the token head reads it, so its columns move)."""
    from transformers import SqueezeBertForTokenClassification

    teacher = tiny_token_bert(layers=2)
    x = tokenizer(["alice flew to new york", "ok"], padding=True, return_tensors="pt")
    student, _ = convert(teacher, init="identity")
    assert isinstance(student, SqueezeBertForTokenClassification)
    assert (student(**x).logits - teacher(**x).logits).abs().max() < 1e-5
    dense = dense_layers(teacher, [0, 1])
    perms = search_perms(dense, Groups(4, 4, 4, 1, 4, 4), heads=4)
    assert not np.array_equal(perms.hidden, np.arange(32))
    permuted = build_student(teacher, dense, perms, Groups())
    assert (permuted(**x).logits - teacher(**x).logits).abs().max() < 1e-5
    form = inference_form(permuted)  # the MatMul form ONNX export traces: per-token logits too
    out = form(x["input_ids"], x["attention_mask"], x["token_type_ids"])
    assert out.shape == (2, x["input_ids"].shape[1], 4) and (out - teacher(**x).logits).abs().max() < 1e-4


def test_conll_and_json_lines_read_alike_and_align_to_first_sub_tokens(tmp_path, tokenizer, caplog):
    folder = conll_folder(tmp_path / "conll")
    task = load_task(TaskSpec(dataset=str(folder), kind="token_classification"), seed=0)
    assert task.labels == TAGS and task.metric == "f1" and task.kind.per_token and len(task.splits["test"]) == 60
    jsonl = tmp_path / "jsonl"
    jsonl.mkdir()
    for split in ("train", "validation", "test"):
        rows = [{"words": list(t), "ner": list(g)} for t, g in zip(*(load_conll_split(folder, split)), strict=True)]
        (jsonl / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    again = load_task(
        TaskSpec(dataset=str(jsonl), kind="token_classification", text_column="words", label_column="ner"), seed=0
    )
    assert (
        again.labels == task.labels
        and again.splits["test"]["tokens"].tolist() == task.splits["test"]["tokens"].tolist()
    )

    df = task.splits["test"].iloc[:1].copy()
    df.at[df.index[0], "tokens"] = ["san", "francisco", "unbelievably"]
    df.at[df.index[0], "label"] = [1, 3, 0]
    enc = encode(df[["tokens", "label"]], tokenizer, max_length=16, cache_dir=None)
    pieces = tokenizer.convert_ids_to_tokens(enc.input_ids.tolist())
    assert enc.per_token and len(enc) == 1 and len(enc.labels) == len(pieces) > 5  # "unbelievably" is several pieces
    words = enc.labels != NO_LABEL
    assert enc.labels[words].tolist() == [1, 3, 0]
    assert all(enc.labels[i] == NO_LABEL for i, p in enumerate(pieces) if p.startswith("##") or p in ("[CLS]", "[SEP]"))
    batch = collate(enc, np.array([0]))
    assert batch["labels"].shape == batch["input_ids"].shape and batch["labels"][0, 0] == NO_LABEL  # [CLS]
    with caplog.at_level("WARNING"):
        cut = encode(df[["tokens", "label"]], tokenizer, max_length=4, cache_dir=None)
    assert (cut.labels != NO_LABEL).sum() == 2 and "1 words lie beyond task.max_length=4" in caplog.text


def load_conll_split(folder: Path, split: str):
    from compress.data.conll import read_conll

    df = read_conll(folder / f"{split}.txt")
    return df["tokens"].tolist(), df["tags"].tolist()


def test_entity_scores_match_seqeval():
    from seqeval.metrics import f1_score, precision_score, recall_score

    rng = random.Random(1)
    gold = [
        [rng.choice(["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC"]) for _ in range(rng.randint(1, 9))]
        for _ in range(200)
    ]
    pred = [[t if rng.random() < 0.7 else rng.choice(["O", "B-PER", "I-LOC"]) for t in g] for g in gold]
    ours = m.entity_scores(m.entity_counts(gold, pred))
    assert ours["f1"] == pytest.approx(f1_score(gold, pred))
    assert ours["precision"] == pytest.approx(precision_score(gold, pred)) and ours["recall"] == pytest.approx(
        recall_score(gold, pred)
    )
    lo, hi = m.entity_bootstrap_ci(m.entity_counts(gold, pred))["f1"]
    assert lo < ours["f1"] < hi and hi - lo < 0.2


def test_token_kind_scores_flat_logits_by_sentence():
    """Scores regroup flat per-token logits into sentences by offsets and read entities per sentence."""

    class Split:
        offsets = np.array([0, 4, 8])
        #               [CLS] B-PER  ##x  [SEP] | [CLS] B-LOC I-LOC [SEP]
        labels = np.array([NO_LABEL, 2, NO_LABEL, NO_LABEL, NO_LABEL, 1, 3, NO_LABEL])

    logits = np.zeros((8, 4), dtype=np.float32)
    logits[np.arange(8), [0, 2, 0, 0, 0, 1, 0, 0]] = 1  # the place loses its second word: one of two entities right
    s = KINDS["token_classification"].scores(logits, Split(), TAGS)
    assert s.n == 2 and s["precision"] == 0.5 and s["recall"] == 0.5 and s["accuracy"] == pytest.approx(2 / 3)
    # paired comparisons resample sentences
    n, recall = KINDS["token_classification"].resampler("recall", logits, Split(), TAGS)
    assert (
        n == 2 and recall(np.arange(2)) == 0.5 and recall(np.array([0, 0])) == 1.0 and recall(np.array([1, 1])) == 0.0
    )


@pytest.mark.parametrize(
    "write, spec, message",
    [
        ({"train.txt": "a NN O\nb NN B-PER\n\nc O\n"}, {}, r"train.txt:4: 2 columns where the file's lines have 3"),
        (
            {"train.txt": "alice B-PER\nbob B-GUY\n"},
            {"labels": ["O", "B-PER"]},
            r"tags \['B-GUY'\] are not in task.labels",
        ),
        ({"train.txt": "alice PER\n"}, {}, r"are not BIO tags"),
        ({"train.jsonl": '{"tokens": ["a", "b"], "tags": ["O"]}\n'}, {}, r"2 tokens but 1 tags"),
        ({"train.csv": "text,label\nhi,1\n"}, {}, r"has no column 'tokens'.*CoNLL"),
    ],
)
def test_bad_token_classification_data(tmp_path, write, spec, message):
    for name, text in write.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(CompressError, match=message):
        load_task(TaskSpec(dataset=str(tmp_path), kind="token_classification", **spec), seed=0)


def test_bad_token_classification_recipes(tmp_path, cli):
    with pytest.raises(
        ValueError, match="metric 'accuracy' is not a token_classification metric; use one of f1, precision, recall"
    ):
        TaskSpec(kind="token_classification", metric="accuracy")
    with pytest.raises(ValueError, match=r"task\.text_pair_column does not apply to token_classification"):
        TaskSpec(kind="token_classification", text_pair_column="b")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {"name": "x", "task": {"kind": "token_classification", "metric": "mcc"}, "passes": [{"name": "evaluate"}]}
        )
    )
    code, _, err = cli("run", recipe)
    assert code == 2 and "metric 'mcc' is not a token_classification metric" in err, err


NER_PASSES = [
    {"name": "finetune_teacher", "options": {"epochs": 8, "lr": 1e-3}},
    {"name": "convert", "options": {"groups": "2,2,2,1,2,2", "fit_samples": 32}},
    {"name": "distill", "options": {"epochs": 5, "lr": 1e-3, "unlabeled": 40}},
    {
        "name": "prune",
        "options": {
            "model": "teacher",
            "ffn_ratio": 0.25,
            "head_ratio": 0.25,
            "importance": "taylor",
            "taylor_samples": 32,
        },
    },
    {"name": "export", "options": {"models": ["student"]}},
    {"name": "quantize"},
    {"name": "evaluate", "options": {"latency": True, "latency_seq": 16, "latency_runs": 5}},
]


@pytest.fixture
def ner_recipe(tmp_path, tiny_teacher_dir):
    folder = conll_folder(tmp_path / "conll", sizes=(300, 60, 60))
    raw = tiny_recipe(tmp_path, folder, tiny_teacher_dir, NER_PASSES)
    raw["task"] = {"dataset": str(folder), "kind": "token_classification", "max_length": 24, "max_train_samples": 240}
    return raw


@pytest.mark.integration
def test_ner_end_to_end(tmp_path, ner_recipe, cli):
    import onnxruntime as ort
    from transformers import AutoTokenizer, SqueezeBertForTokenClassification

    run, metrics = run_raw(tmp_path, ner_recipe, cli)
    assert metrics.task_kind == "token_classification" and metrics.metric == "f1" and metrics.labels == TAGS
    for form in ("teacher", "student", "student.onnx", "student.int8"):
        test = metrics.evaluations[form].splits["test"]
        assert {"f1", "precision", "recall", "accuracy"} <= set(test.metrics) and test.n == 60, form
        assert test["f1"] > 0.5, (form, test.metrics)  # entities found, not all-O (all-O scores 0)
    distill = metrics.reports["distill"]["student"]
    assert distill["metric"] == "f1" and distill["unlabeled_examples"] == 40
    assert metrics.evaluations["student.int8"].latency and (run / "models" / "student" / "model.int8.onnx").is_file()

    folder = run / "models" / "student"
    student = SqueezeBertForTokenClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    x = tokenizer([["alice", "love", "good", "new", "york", "food"]], is_split_into_words=True, return_tensors="np")
    logits = ort.InferenceSession(str(folder / "model.int8.onnx")).run(["logits"], dict(x))[0]
    assert logits.shape == (1, x["input_ids"].shape[1], 4) and student.config.id2label[3] == "I-LOC"
    words = {w: i for i, w in reversed(list(enumerate(x.word_ids())))}
    tags = [student.config.id2label[int(logits[0, words[w]].argmax())] for w in range(6)]
    assert tags == ["B-PER", "O", "O", "B-LOC", "I-LOC", "O"], tags
    card = (folder / "README.md").read_text()
    assert "token classifier" in card and "test f1 [95% CI]" in card and "SqueezeBertForTokenClassification" in card
