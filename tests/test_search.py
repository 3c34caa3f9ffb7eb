"""compress search + compress report on tiny random BERTs: trials, pruning, resume after kill -9, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import optuna
import optuna.storages
import pandas as pd
import pytest
import yaml
from conftest import tiny_recipe
from optuna.trial import TrialState

from compress.core.errors import CompressError
from compress.core.records import TeacherReference, TrialScore
from compress.recipe.search import Param
from compress.search.frontier import hypervolume, knee, pareto

TRIAL_PASSES = [
    {"name": "finetune_teacher", "options": {"epochs": 1}},
    {"name": "convert", "options": {"groups": "2,2,2,1,2,2", "fit_samples": 32}},
    {"name": "distill", "options": {"epochs": 1}},
    {"name": "export", "options": {"models": ["student"]}},
    {"name": "quantize"},
    {"name": "evaluate", "options": {"models": ["student*"], "latency": True, "latency_seq": 16, "latency_runs": 5}},
]
SPACE = {
    "passes.convert.groups": {"groups": [1, 2, 4]},
    "passes.convert.layers": {"choices": [1, 2]},
    "passes.quantize.enabled": {"choices": [True, False]},
}


def write_recipe(tmp_path: Path, csv: Path, teacher: Path, **search) -> Path:
    raw = tiny_recipe(tmp_path, csv, teacher, TRIAL_PASSES, search={"trials": 3, "space": SPACE} | search)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def load(path: Path, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{path}")


def test_search_then_report(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    recipe = write_recipe(tmp_path, tiny_csv, tiny_teacher_dir)
    code, _out, err = cli("search", recipe)
    assert code == 0, err
    folder = tmp_path / "results" / "tiny"
    study = load(folder / "study.db")
    done = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(done) >= 3
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        config, s = t.user_attrs["config"], TrialScore.model_validate(t.user_attrs["score"])
        assert set(config) == set(SPACE) and s.form.startswith("student") and t.values[0] == s.validation["accuracy"]
        assert (Path(s.path) / "metrics.json").is_file() and 0 <= s.validation["accuracy"] <= 1 and s.latency.median_ms > 0 < s.speedup
        assert s.groups == config["passes.convert.groups"] and s.layers == config["passes.convert.layers"]
        assert (s.form == "student.int8") == config["passes.quantize.enabled"]  # int8 is the fastest form when made
    teacher = TeacherReference.model_validate(json.loads((folder / "search.json").read_text())["teacher"])
    assert teacher.latency_ms > 0 and teacher.latency["teacher.onnx"].runtime == "onnxruntime" and 0 <= teacher.test["accuracy"] <= 1

    # the same study again: refused without --resume; with it, nothing more to do
    code, _, err = cli("search", recipe)
    assert code == 2 and "--resume" in err
    code, _, err = cli("search", recipe, "--resume")
    assert code == 0 and len(load(folder / "study.db").trials) == len(study.trials)

    out_dir = tmp_path / "report"
    code, _, err = cli("report", folder, "--out", out_dir)
    assert code == 0, err
    csv = pd.read_csv(out_dir / "trials.csv")
    assert len(csv) == len(study.trials) and {"val_accuracy", "test_accuracy", "latency_ms", "speedup_vs_teacher", "groups"} <= set(csv.columns)
    md = (out_dir / "report.md").read_text()
    assert "Pareto front" in md and "Recommended" in md and "pareto.png" in md
    assert (out_dir / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    check_offline_html((out_dir / "index.html").read_text(), front_size=json.loads((out_dir / "summary.json").read_text())["front_size"])


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.external, self.scripts, self.ids, self.rows, self._in = [], [], set(), 0, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag in ("script", "link", "img") and any(str(a.get(k, "")).startswith(("http:", "https:", "//")) for k in ("src", "href")):
            self.external.append(a)
        if tag == "script":
            self.scripts.append(0)
            self._in = "script"
        if tag == "tr":
            self.rows += 1

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts[-1] += len(data)


def check_offline_html(text: str, front_size: int) -> None:
    """No headless browser here: check the page is self-contained and holds the plot and the front."""
    page = _Page()
    page.feed(text)
    assert not page.external, page.external  # nothing loaded from a CDN
    assert max(page.scripts) > 1_000_000  # plotly.js embedded
    assert "frontier" in page.ids and "pareto" in page.ids
    assert page.rows == front_size + 1  # header + one row per front student
    assert "Plotly.newPlot(" in text and '"frontier"' in text


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_kill_minus_9_then_resume(tmp_path, tiny_csv, tiny_teacher_dir):
    """Kill a 2-worker search mid-way: finished trials stay, none is duplicated, the stale one is retried."""
    recipe = write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, trials=6, heartbeat_seconds=1, stale_after_seconds=4, prune=False)
    db = tmp_path / "results" / "tiny" / "study.db"
    cmd = [sys.executable, "-m", "compress.cli", "-q", "search", str(recipe), "--workers", "2"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    before = []
    while time.time() < deadline:
        time.sleep(0.5)
        if db.exists() and proc.poll() is None:
            try:
                trials = load(db).trials
            except Exception:
                continue
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            if len(complete) >= 2 and any(t.state == TrialState.RUNNING for t in trials):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                before = {t.number: t.values for t in load(db).trials if t.state == TrialState.COMPLETE}
                running = [t.number for t in load(db).trials if t.state == TrialState.RUNNING]
                break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    assert before and running, "the search finished before it could be killed"
    time.sleep(5)  # older than stale_after_seconds
    resumed = subprocess.run([*cmd[:-2], "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trials = load(db).trials
    after = {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}
    assert all(after.get(n) == v for n, v in before.items()), (before, after)  # every finished trial kept, unchanged
    assert len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) >= 6, [(t.number, t.state) for t in trials]
    for n in running:  # the killed trials failed as stale and were retried once with the same parameters
        assert trials[n].state == TrialState.FAIL, (n, trials[n].state)
        retries = [t for t in trials if optuna.storages.RetryFailedTrialCallback.retried_trial_number(t) == n]
        assert len(retries) == 1, (n, [(t.number, t.state) for t in retries])
        # a trial killed while still sampling holds only part of its parameters; the retry keeps those and samples the rest
        assert trials[n].params.items() <= retries[0].params.items(), (n, trials[n].params, retries[0].params)
    folders = {p.name for p in (db.parent / "trials").iterdir()}
    assert {f"trial-{n:04d}" for n in after} <= folders  # every finished trial has its run folder
    chains = [optuna.storages.RetryFailedTrialCallback.retried_trial_number(t) for t in trials if t.state == TrialState.COMPLETE]
    assert len([c for c in chains if c is not None]) == len({c for c in chains if c is not None})  # no trial finished twice


def test_search_bad_input(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    cases = [
        ({"space": {}}, "search.space is empty"),
        ({"space": {"passes.convert.groups": {"groups": [1, 3]}}}, "valid: 1, 2, 4"),
        ({"space": {"passes.convert.groups": {"choices": ["4,4,4,1,4,5"]}}}, "groups.output=5"),
        ({"space": {"passes.distill.epoch": {"choices": [1, 2]}}}, "did you mean 'epochs'"),
        ({"space": {"passes.distill.lr": {"choices": [1], "low": 1, "high": 2}}}, "exactly one of"),
    ]
    for search, needle in cases:
        code, _, err = cli("search", write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, **search))
        assert code == 2 and needle in err, (search, err)
    recipe = write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, trials=1)
    code, _, err = cli("search", recipe, "--storage", f"sqlite:///{tmp_path}/no/such/dir/x.db")
    assert code == 2 and "cannot open study storage" in err
    assert cli("search", recipe)[0] == 0
    changed = write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, trials=1, space={"passes.convert.layers": {"choices": [1, 2]}})
    code, _, err = cli("search", changed, "--resume")
    assert code == 2 and "different recipe or search space" in err and "--force-new" in err
    code, _, err = cli("search", changed, "--force-new")
    assert code == 0, err
    study = load(tmp_path / "results" / "tiny" / "study.db")
    assert set(study.trials[0].user_attrs["config"]) == {"passes.convert.layers"}


def test_report_refuses_empty_study(tmp_path, cli):
    folder = tmp_path / "empty"
    folder.mkdir()
    url = f"sqlite:///{folder}/study.db"
    optuna.create_study(study_name="empty", storage=url, directions=["maximize", "minimize"])
    (folder / "search.json").write_text(json.dumps({"study": "empty", "storage": url, "teacher": {}}))
    code, _, err = cli("report", folder, "--out", tmp_path / "r")
    assert code == 2 and "no teacher reference this compress version reads" in err and len(err.strip().splitlines()) == 1
    teacher = TeacherReference(validation={"n": 1, "metrics": {"accuracy": 0.5}}, latency={})
    (folder / "search.json").write_text(json.dumps({"study": "empty", "storage": url, "teacher": teacher.model_dump(mode="json")}))
    code, _, err = cli("report", folder, "--out", tmp_path / "r")
    assert code == 2 and "no finished trial" in err and not (tmp_path / "r").exists()
    code, _, err = cli("report", tmp_path / "nothing-here")
    assert code == 2 and "neither a study folder" in err


def _points(rows):
    return pd.DataFrame(
        [
            {"source": "s", "trial": i, "state": "COMPLETE", "feasible": True, "val_accuracy": a, "speedup_vs_teacher": x, "test_accuracy": a}
            for i, (a, x) in enumerate(rows)
        ]
    )


def test_front_hypervolume_and_knee():
    pts = _points([(0.80, 1.0), (0.79, 4.0), (0.72, 8.0), (0.75, 3.0), (0.60, 2.0)])
    front = pareto(pts)
    assert list(front["trial"]) == [2, 1, 0]  # (0.75, 3x) and (0.60, 2x) are dominated by (0.79, 4x)
    assert hypervolume(front, teacher_val=0.80) > hypervolume(front.iloc[1:2], teacher_val=0.80) > 0
    assert hypervolume(front.iloc[2:], teacher_val=0.80) == 0  # at the teacher's latency: on the reference boundary
    pick, why = knee(front, teacher_val=0.80)
    assert pick.trial == 1 and "knee" in why
    pts.loc[1, "feasible"] = False  # infeasible points never enter the front
    assert 1 not in set(pareto(pts)["trial"])


def test_param_kinds():
    assert Param(low=1, high=3).is_int_range() and not Param(low=1e-5, high=1e-3, log=True).is_int_range()
    assert Param(groups=[1, 4]).first() == "1,1,1,1,1,1" == Param(groups_up_to=8).first()
    for bad in ({}, {"low": 2, "high": 1}, {"low": 0, "high": 1, "log": True}, {"choices": []}, {"groups": [1], "groups_up_to": 4}):
        with pytest.raises(ValueError):
            Param(**bad)


def test_score_requires_timed_student():
    from compress.core.records import FormEval, RunMetrics, SplitScores
    from compress.recipe.search import SearchSpec
    from compress.search.objective import score

    untimed = FormEval(
        form="student", model="student", runtime="torch", precision="fp32", splits={"validation": SplitScores(n=1, metrics={"accuracy": 1.0})}
    )
    metrics = RunMetrics(name="t", status="complete", compress_version="x", evaluations={"student": untimed})
    with pytest.raises(CompressError, match="did not time student"):
        score(metrics, SearchSpec(space={}), None, Path("."))


def test_groups_up_to_offers_the_divisors(tmp_path, tiny_csv, tiny_teacher_dir):
    from compress.recipe import load_recipe
    from compress.search.space import check_space

    recipe = load_recipe(write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, space={"passes.convert.groups": {"groups_up_to": 12}}))
    check_space(recipe, recipe.search, "r.yaml")
    assert recipe.search.space["passes.convert.groups"].groups == [1, 2, 4, 8]  # hidden 32, FFN 64


def test_front_of_a_subset_keeps_row_labels():
    pts = _points([(0.80, 1.0), (0.79, 4.0), (0.72, 8.0)])
    pts.index = [10, 11, 12]  # e.g. the second study of an overlaid report
    assert list(pareto(pts)["trial"]) == [2, 1, 0]


def test_hypervolume_2d_matches_optunas_own():
    """Our 2-D hypervolume (Optuna has no public one) against Optuna's private implementation, on random fronts."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    from compress.search.frontier import hypervolume_2d

    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 30):
        pts = rng.random((n, 2))
        ref = np.array([1.1, 1.2])
        assert hypervolume_2d(pts, ref) == pytest.approx(compute_hypervolume(pts, ref), rel=1e-12)
    assert hypervolume_2d(np.array([[0.0, 0.5], [0.5, 0.0]]), np.array([1.0, 1.0])) == pytest.approx(0.75)
