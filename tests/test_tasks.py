"""Task kinds: GLUE metrics against scipy, regression end to end (fine-tune -> convert -> distill -> export -> int8 ->
evaluate, then a tiny search), task.metric driving selection and reports, and the bad inputs of each."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import pearsonr, spearmanr

from compress.core.errors import CompressError
from compress.data.sources import load_task
from compress.recipe.task import TaskSpec
from compress.tasks import metrics as m
from compress.tasks.kinds import KINDS
from conftest import WORDS, latency, make_rows, run_raw, tiny_recipe


def test_metrics_match_their_definitions():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    tp, tn = np.sum((p == 1) & (y == 1)), np.sum((p == 0) & (y == 0))
    fp, fn = np.sum((p == 1) & (y == 0)), np.sum((p == 0) & (y == 1))
    assert m.mcc(y, p) == pytest.approx((tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert m.f1(y, p) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert (
        m.mcc(y, y) == pytest.approx(1.0)
        and m.mcc(y, 1 - y) == pytest.approx(-1.0)
        and m.mcc(y, np.zeros_like(y)) == 0.0
    )
    three = rng.integers(0, 3, 300)
    assert -1 <= m.mcc(three, rng.integers(0, 3, 300)) <= 1 and m.macro_f1(three, three) == 1.0
    a, b = rng.normal(size=200), rng.normal(size=200)
    b = a + b
    ties = np.round(a, 1)
    assert m.pearson(a, b) == pytest.approx(pearsonr(a, b)[0])
    assert m.spearman(ties, b) == pytest.approx(spearmanr(ties, b)[0])
    assert m.pearson(a, np.ones(200)) == 0.0


def test_scores_have_intervals_for_every_metric():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    logits = np.stack([rng.normal(size=300), labels + rng.normal(size=300)], 1)
    s = KINDS["classification"].scores(logits, SimpleNamespace(labels=labels, offsets=np.arange(301)), ["a", "b"])
    assert set(s.metrics) == {"accuracy", "macro_f1", "mcc", "f1"} == set(s.ci95)
    assert all(lo <= s[k] <= hi for k, (lo, hi) in s.ci95.items())
    y = rng.normal(size=300).astype(np.float32)
    r = KINDS["regression"].scores(
        (y + 0.5 * rng.normal(size=300))[:, None], SimpleNamespace(labels=y, offsets=np.arange(301)), ["y"]
    )
    assert set(r.metrics) == {"pearson", "spearman", "mse"} and r["pearson"] > 0.8


def test_paired_interval_of_a_difference():
    """Two classifiers scored on the same bootstrap draws: identical ones differ by exactly 0; one that is right on
    30 more of 2,000 texts (1.5 pt) and otherwise shares every error is surely better, though the two models' own
    intervals overlap widely; a reshuffled copy of the same accuracy is not."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 2000)
    a = np.where(rng.random(2000) < 0.78, y, (y + 1) % 3)
    wrong = np.flatnonzero(a != y)
    b = a.copy()
    b[wrong[:30]] = y[wrong[:30]]
    kind, split = KINDS["classification"], SimpleNamespace(labels=y, offsets=np.arange(2001))
    units = lambda pred: kind.resampler("accuracy", np.eye(3)[pred], split, ["a", "b", "c"])
    (n, fa), (_, fb) = units(a), units(b)
    ra, rb = m.resampled(n, fa, seed=1), m.resampled(n, fb, seed=1)
    assert n == 2000 and m.paired_ci(ra, ra) == (0.0, 0.0, 0.0)
    d, lo, hi = m.paired_ci(rb, ra)
    assert d == pytest.approx(30 / 2000) and 0 < lo < d < hi < 0.03
    own = [m.bootstrap_ci(y, p, {"accuracy": m.accuracy})["accuracy"] for p in (a, b)]
    assert own[1][0] < own[0][1]  # separately, the intervals overlap: they cannot tell
    shuffled = np.where(rng.permutation(a == y), y, (y + 2) % 3)  # as accurate as a, wrong on other texts
    _, lo, hi = m.paired_ci(m.resampled(n, units(shuffled)[1], seed=1), ra)
    assert lo < 0 < hi
    # draws of other units: no longer paired, the interval widens
    _, lo, hi = m.paired_ci(rb, m.resampled(n, fa, seed=2))
    assert hi - lo > 2 * (m.paired_ci(rb, ra)[2] - m.paired_ci(rb, ra)[1])


@pytest.mark.parametrize("kind, metric", [("classification", "macro_f1"), ("regression", "spearman")])
def test_resampler_scores_what_the_kind_scores(kind, metric):
    """Over every unit, a kind's resampler gives its own score (NER and QA: tests/test_ner.py, tests/test_qa.py)."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 300) if kind == "classification" else rng.normal(size=300).astype(np.float32)
    logits = (
        np.eye(3)[(y + rng.integers(0, 2, 300)) % 3]
        if kind == "classification"
        else (y + rng.normal(size=300))[:, None]
    )
    split = SimpleNamespace(labels=y, offsets=np.arange(301))
    n, fn = KINDS[kind].resampler(metric, logits, split, ["a", "b", "c"])
    assert n == 300 and fn(np.arange(n)) == pytest.approx(KINDS[kind].score(metric, logits, split, ["a", "b", "c"]))


FILLER = [w for w in WORDS if w not in ("great", "awful", "ok")]


def score_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """Learnable toy similarity: the cue word sets the score (awful 1, ok 2.5, great 4), plus a little noise."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        cue = ["awful", "ok", "great"][i % 3]
        words = [*rng.sample(FILLER, 4), cue]
        rng.shuffle(words)
        rows.append(
            {
                "text": " ".join(words),
                "score": round({"awful": 1.0, "ok": 2.5, "great": 4.0}[cue] + rng.uniform(-0.4, 0.4), 3),
            }
        )
    return pd.DataFrame(rows)


def test_regression_labels_stay_floats(tmp_path):
    path = tmp_path / "sts.csv"
    score_rows(100).to_csv(path, index=False)
    data = load_task(TaskSpec(dataset=str(path), kind="regression", label_column="score"), seed=0)
    assert data.labels == ["score"] and data.metric == "pearson" and data.secondary == "spearman"
    assert all(df["label"].dtype == np.float32 for df in data.splits.values())
    assert "regression of 'score'" in data.summary()


@pytest.mark.parametrize(
    ("spec", "rows", "message"),
    [
        (
            {"label_column": "score"},
            "scores",
            "(0.611, 0.626, 0.653, ...), a score rather than classes: set task.kind: regression",
        ),
        (
            {"kind": "regression", "label_column": "sentiment"},
            "classes",
            "label column 'sentiment' (train) has values that are not numbers",
        ),
        (
            {"label_column": "sentiment", "metric": "f1"},
            "classes",
            "not a classification metric here; use one of accuracy, macro_f1, mcc",
        ),
    ],
)
def test_labels_that_do_not_fit_the_kind(tmp_path, spec, rows, message):
    path = tmp_path / "data.csv"
    (score_rows(60) if rows == "scores" else make_rows(60)).to_csv(path, index=False)
    with pytest.raises(CompressError) as e:
        load_task(TaskSpec(dataset=str(path), **spec), seed=0)
    assert message in str(e.value) and len(str(e.value).splitlines()) == 1, str(e.value)


def test_metric_must_belong_to_the_kind(tmp_path, cli):
    with pytest.raises(ValueError, match="metric 'pearson' is not a classification metric"):
        TaskSpec(metric="pearson")
    with pytest.raises(ValueError, match="a regression task has none"):
        TaskSpec(kind="regression", labels=["a", "b"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump({"name": "x", "task": {"kind": "regression", "metric": "mcc"}, "passes": [{"name": "evaluate"}]})
    )
    code, _, err = cli("run", recipe)
    assert code == 2 and "metric 'mcc' is not a regression metric; use one of pearson, spearman" in err, err


REGRESSION_PASSES = [
    {"name": "finetune_teacher", "options": {"epochs": 10, "lr": 1e-3}},
    {"name": "convert", "options": {"groups": "2,2,2,1,2,2", "fit_samples": 32}},
    {"name": "distill", "options": {"epochs": 6, "lr": 1e-3}},
    {"name": "export", "options": {"models": ["student"]}},
    {"name": "quantize"},
    {"name": "evaluate", "options": {"latency": True, "latency_seq": 16, "latency_runs": 5}},
]


@pytest.fixture
def regression_recipe(tmp_path, tiny_teacher_dir):
    path = tmp_path / "sts.csv"
    score_rows(600).to_csv(path, index=False)
    raw = tiny_recipe(tmp_path, path, tiny_teacher_dir, REGRESSION_PASSES)
    raw["task"] = {
        "dataset": str(path),
        "kind": "regression",
        "label_column": "score",
        "metric": "spearman",
        "max_length": 16,
    }
    return raw


@pytest.mark.integration
def test_regression_end_to_end(tmp_path, regression_recipe, cli):
    from transformers import SqueezeBertForSequenceClassification

    run, metrics = run_raw(tmp_path, regression_recipe, cli)
    assert metrics.task_kind == "regression" and metrics.metric == "spearman" and metrics.labels == ["score"]
    for form in ("teacher", "student", "student.onnx", "student.int8"):
        test = metrics.evaluations[form].splits["test"]
        assert {"pearson", "spearman", "mse"} <= set(test.metrics) and "accuracy" not in test.metrics, form
    assert metrics.evaluations["teacher"].splits["test"]["spearman"] > 0.5  # it learned the score, not a constant
    assert metrics.evaluations["student.int8"].latency and (run / "models" / "student" / "model.int8.onnx").is_file()
    distill = metrics.reports["distill"]["student"]
    assert distill["metric"] == "spearman" and all("val_score" in h for h in distill["history"])
    student = SqueezeBertForSequenceClassification.from_pretrained(run / "models" / "student")
    assert student.config.num_labels == 1 and student.config.problem_type == "regression"
    card = (run / "models" / "student" / "README.md").read_text()
    assert "test spearman [95% CI]" in card and "logits[:, 0] is the score" in card


@pytest.mark.parametrize(("kind", "metric"), [("regression", "spearman"), ("token_classification", "f1")])
def test_the_search_and_its_report_use_the_tasks_metric(tmp_path, kind, metric):
    """What differs by task kind in a study is the metric the trials maximize and the report names: a trial's score
    and objective are the task's metric, and so are the report's summary and columns (search, finalize and report
    are otherwise the same code for every kind; tests/test_search.py runs them on a classifier)."""
    from compress.core.arch import Architecture
    from compress.core.frontier import TeacherReference
    from compress.core.records import FormEval, RunMetrics, SplitScores
    from compress.deploy.blocks import plan
    from compress.deploy.latency_model import Fingerprint, LatencyModel
    from compress.recipe.search import SearchSpec
    from compress.report.frontier import pareto
    from compress.report.points import Context, _trial_row
    from compress.report.render import Page, render_markdown
    from compress.report.summary import summarize
    from compress.study.objective import objective_values, score
    from conftest import tiny_bert

    run = tmp_path / "trial-0000"
    tiny_bert(num_labels=1).config.save_pretrained(run / "models" / "student")
    arch = Architecture.of(tiny_bert(num_labels=1).config)
    fp = Fingerprint(machine="m", runtimes={}, target="onnxruntime-int8", seq=16, batch=1, threads=1)
    model = LatencyModel(fingerprint=fp, blocks=dict.fromkeys(plan(arch), 0.5), overhead_ms=0.1, teacher_ms={"t": 4.0})
    scores = lambda x: SplitScores(n=20, metrics={metric: x, "pearson": x}, ci95={metric: (x - 0.1, x + 0.1)})
    lat = latency(speedup=2.0)
    form = FormEval(
        form="student.int8",
        model="student",
        runtime="onnxruntime",
        precision="int8",
        latency=lat,
        splits={"validation": scores(0.61), "test": scores(0.6)},
    )
    metrics = RunMetrics(
        name="t",
        status="complete",
        compress_version="x",
        metric=metric,
        task_kind=kind,
        evaluations={"student.int8": form},
    )
    teacher_form = form.model_copy(
        update={"form": "teacher", "model": "teacher", "splits": {"validation": scores(0.7), "test": scores(0.7)}}
    )
    teacher = TeacherReference(forms={"teacher": teacher_form}, metric=metric)
    trial = score(metrics, SearchSpec(space={}), teacher, run, model)
    assert trial.metric == metric and trial.value == 0.61
    assert objective_values(trial, ["accuracy", "latency"]) == (0.61, trial.predicted_ms)

    points = pd.DataFrame(
        [{"source": "s", "kind": "trial", "name": "s#0", "trial": 0, "state": "COMPLETE", **_trial_row(trial)}]
    )
    summary, picks = summarize(points, pareto(points), Context(teacher, None, None, tmp_path / "s"), {"s": teacher})
    assert summary.metric == metric and summary.teacher_score == {"validation": 0.7, "test": 0.7}
    md = render_markdown(Page("r", points, pareto(points), summary, picks, False))
    assert f"| val {metric} |" in md and f"test {metric} [95% CI]" in md and "val accuracy" not in md
