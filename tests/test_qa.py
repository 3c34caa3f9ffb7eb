"""Extractive question answering: the SQuAD v1.1 reader, windows over long contexts, SQuAD's EM/F1, span post-
processing, exact conversion of the span head, the whole chain on generated SQuAD folders, and bad inputs.

No PyPI package ships SQuAD-style data (the `squad` package is an unrelated Django app), so the data here is
generated in SQuAD v1.1's exact JSON layout: short contexts naming a person and a place, "who"/"where" questions."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForQuestionAnswering

from compress.convert.build import build_student, convert, dense_layers
from compress.convert.perms import search_perms
from compress.core.errors import CompressError
from compress.core.groups import Groups
from compress.data.sources import load_task
from compress.data.squad import encode_questions
from compress.deploy.matmul_form import inference_form
from compress.modeling.heads import logits_of
from compress.recipe.task import TaskSpec
from compress.tasks import metrics as m
from compress.tasks.kinds import KINDS
from conftest import WORDS, run_raw, tiny_recipe

PEOPLE = ["alice", "bob", "carol", "dave", "erin"]
PLACES = ["paris", "new york", "san francisco", "berlin"]


def article(rng: random.Random, key: str, filler: tuple[int, int] = (4, 30)) -> dict:
    person, place = rng.choice(PEOPLE), rng.choice(PLACES)
    words = rng.choices(WORDS, k=rng.randint(*filler))
    for w in (person, place):
        words.insert(rng.randrange(len(words) + 1), w)
    context = " ".join(words)
    qas = [
        {"id": f"{key}-{i}", "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]}
        for i, (q, a) in enumerate((("who is it ?", person), ("where is it ?", place)))
    ]
    return {"title": key, "paragraphs": [{"context": context, "qas": qas}]}


def squad_folder(folder: Path, sizes=(200, 40, 40), seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "validation", "test"), sizes, strict=True):
        (folder / f"{split}.json").write_text(
            json.dumps({"version": "1.1", "data": [article(rng, f"{split}{i}") for i in range(n)]})
        )
    return folder


def test_squad_normalization_and_scores():
    assert m.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    s = m.answer_scores([["new york", "NYC"], ["the paris"]], ["New York.", "paris france"])
    # "paris" vs "paris france"
    assert s["exact_match"].tolist() == [1.0, 0.0] and s["f1"][1] == pytest.approx(2 * 1 / 3)


def test_windows_over_a_long_context_and_the_best_span(tmp_path, tokenizer):
    """A context longer than max_length is read in overlapping windows; the answer is labelled in the windows
    that hold it whole, [CLS] elsewhere; post-processing picks the best span over all windows."""
    rng = random.Random(3)
    folder = tmp_path / "long"
    folder.mkdir()
    (folder / "train.json").write_text(json.dumps({"data": [article(rng, str(i), filler=(40, 40)) for i in range(6)]}))
    task = load_task(TaskSpec(dataset=str(folder), kind="question_answering", max_length=32, doc_stride=8), seed=0)
    df = task.splits["train"]
    enc = encode_questions(df, tokenizer, 32, 8, 30)
    assert len(enc) > len(df) and enc.lengths().max() <= 32 and enc.spans is not None
    for f, q in enumerate(enc.spans.example.tolist()):
        s, e = enc.labels[f]
        spans = enc.spans.char_spans[enc.offsets[f] : enc.offsets[f + 1]]
        if s:  # labelled window: its tokens cover exactly the answer's characters
            assert df["context"][q][spans[s, 0] : spans[e, 1]] == df["answers"][q][0]
    logits = np.full((int(enc.offsets[-1]), 2), -5.0, dtype=np.float32)
    for f, (s, e) in enumerate(enc.labels):  # a model that is right wherever the answer is visible
        logits[enc.offsets[f] + s, 0] = logits[enc.offsets[f] + e, 1] = 5.0 if s else -5.0
    kind = KINDS["question_answering"]
    assert kind.answers(logits, enc) == [a[0] for a in df["answers"]]
    scores = kind.scores(logits, enc, task.labels)
    assert scores["exact_match"] == 1.0 and scores["f1"] == 1.0 and scores.n == len(df)
    logits[
        np.repeat(enc.spans.example == 0, np.diff(enc.offsets)), 0
    ] = -5.0  # question 0: no start stands out, another span wins
    n, em = kind.resampler("exact_match", logits, enc, task.labels)  # paired comparisons resample questions
    per = m.answer_scores(enc.spans.answers, kind.answers(logits, enc))["exact_match"]
    assert (
        n == len(df)
        and em(np.arange(n)) == pytest.approx(per.mean())
        and em(np.array([0, 0])) == per[0]
        and em(np.array([1])) == 1.0
    )


@torch.no_grad()
def test_span_head_converts_exactly(tokenizer):
    from transformers import SqueezeBertForQuestionAnswering

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    teacher = BertForQuestionAnswering(config).eval()
    x = tokenizer(["who is it ?"], ["alice lives in paris"], return_tensors="pt")
    student, _ = convert(teacher, init="identity")
    assert isinstance(student, SqueezeBertForQuestionAnswering)
    assert (logits_of(student(**x)) - logits_of(teacher(**x))).abs().max() < 1e-5
    dense = dense_layers(teacher, [0, 1])
    permuted = build_student(teacher, dense, search_perms(dense, Groups(4, 4, 4, 1, 4, 4), heads=4), Groups())
    out = inference_form(permuted)(x["input_ids"], x["attention_mask"], x["token_type_ids"])
    assert out.shape == (1, x["input_ids"].shape[1], 2) and (out - logits_of(teacher(**x))).abs().max() < 1e-4


def test_bad_question_answering_data(tmp_path):
    bad = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": "alice lives in paris",
                        "qas": [{"id": "q1", "question": "where?", "answers": [{"text": "paris", "answer_start": 3}]}],
                    }
                ]
            }
        ]
    }
    (tmp_path / "train.json").write_text(json.dumps(bad))
    with pytest.raises(CompressError, match=r"question 'q1': answer 'paris' is not at answer_start 3 .*found 'ce li'"):
        load_task(TaskSpec(dataset=str(tmp_path), kind="question_answering"), seed=0)
    (tmp_path / "train.json").write_text('{"rows": []}')
    with pytest.raises(CompressError, match=r"not a SQuAD v1\.1 file"):
        load_task(TaskSpec(dataset=str(tmp_path), kind="question_answering"), seed=0)
    with pytest.raises(
        ValueError, match="metric 'accuracy' is not a question_answering metric; use one of f1, exact_match"
    ):
        TaskSpec(kind="question_answering", metric="accuracy")


def test_a_long_context_without_stride_is_refused(tmp_path, tokenizer):
    folder = tmp_path / "long"
    folder.mkdir()
    (folder / "train.json").write_text(
        json.dumps({"data": [article(random.Random(i), str(i), filler=(60, 60)) for i in range(5)]})
    )
    task = load_task(TaskSpec(dataset=str(folder), kind="question_answering", max_length=32, doc_stride=0), seed=0)
    with pytest.raises(
        CompressError, match=r"longer than task.max_length=32 tokens and task.doc_stride is 0; set task.doc_stride"
    ):
        encode_questions(task.splits["train"], tokenizer, 32, 0, 30)


QA_PASSES = [
    {"name": "finetune_teacher", "options": {"epochs": 10, "lr": 1e-3}},
    {"name": "convert", "options": {"groups": "2,2,2,1,2,2", "fit_samples": 32}},
    {"name": "distill", "options": {"epochs": 4, "lr": 1e-3}},
    {"name": "export", "options": {"models": ["student"]}},
    {"name": "quantize"},
    {"name": "evaluate", "options": {"latency": True, "latency_seq": 16, "latency_runs": 5}},
]


@pytest.mark.integration
def test_question_answering_end_to_end(tmp_path, tiny_teacher_dir, cli):
    import onnxruntime as ort
    from transformers import SqueezeBertForQuestionAnswering

    raw = tiny_recipe(tmp_path, squad_folder(tmp_path / "squad"), tiny_teacher_dir, QA_PASSES)
    raw["task"] = {"dataset": raw["task"]["dataset"], "kind": "question_answering", "max_length": 32, "doc_stride": 8}
    run, metrics = run_raw(tmp_path, raw, cli)
    assert metrics.task_kind == "question_answering" and metrics.metric == "f1"
    for form in ("teacher", "student", "student.onnx", "student.int8"):
        test = metrics.evaluations[form].splits["test"]
        assert set(test.metrics) == {"f1", "exact_match"} and test.n == 80, form
        assert test["f1"] > 0.3, (form, test.metrics)  # it finds entity spans (a random span scores ~0.05)
    folder = run / "models" / "student"
    student = SqueezeBertForQuestionAnswering.from_pretrained(folder)
    x = {
        k: v.numpy()
        for k, v in __import__("transformers")
        .AutoTokenizer.from_pretrained(folder)(["who is it ?"], ["good alice day"], return_tensors="pt")
        .items()
    }
    logits = ort.InferenceSession(str(folder / "model.int8.onnx")).run(["logits"], x)[0]
    assert logits.shape == (1, x["input_ids"].shape[1], 2) and student.config.num_labels == 2
    card = (folder / "README.md").read_text()
    assert "extractive question answerer" in card and "start_logits" in card and "test f1 [95% CI]" in card


def test_the_default_doc_stride_fits_every_max_length():
    """Left out, doc_stride is a quarter of max_length (32 at 128, the old fixed default); one that leaves too little
    new context per window is refused with the fix."""
    from pydantic import ValidationError

    from compress.recipe.task import TaskSpec

    for length, stride in ((8, 2), (64, 16), (128, 32), (384, 96)):
        assert TaskSpec(kind="question_answering", max_length=length).stride == stride
    assert TaskSpec(kind="question_answering", max_length=64, doc_stride=0).stride == 0
    with pytest.raises(ValidationError, match=r"doc_stride 40 leaves too little .* below max_length / 2 \(32\)"):
        TaskSpec(kind="question_answering", max_length=64, doc_stride=40)
