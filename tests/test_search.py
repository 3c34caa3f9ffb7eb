"""compress search + compress report on tiny random BERTs: trials, pruning, resume after kill -9, bad input."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import optuna
import optuna.storages
import pandas as pd
import pytest
from optuna.trial import TrialState

from compress.core.arch import Architecture
from compress.core.errors import CompressError
from compress.core.frontier import BudgetUse, Frontier, TeacherReference, TrialScore
from compress.core.records import SplitScores, read_metrics
from compress.deploy.forms import ADDED, added_forms
from compress.deploy.latency_model import LatencyModel
from compress.deploy.matmul_form import FORM_VERSION
from compress.finalize.forms import add_forms, teacher_targets
from compress.recipe.search import Param
from compress.report.frontier import hypervolume, knee, pareto
from compress.report.summary import ReportSummary
from compress.study.info import read_info
from conftest import FINALIZE, SPACE, latency, teacher_forms, write_recipe


def load(path: Path, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{path}")


def scored(study: optuna.Study) -> dict[int, TrialScore]:
    return {t.number: TrialScore.model_validate(t.user_attrs["score"]) for t in study.get_trials(states=COMPLETE)}


def frontier_of(folder: Path) -> Frontier:
    return Frontier.model_validate(json.loads((folder / "final" / "frontier.json").read_text()))


COMPLETE = (TrialState.COMPLETE,)


@pytest.mark.integration
def test_trials_are_runs_scored_in_the_target_by_the_latency_model(finished_study):
    folder = finished_study.folder
    study = load(folder / "study.db")
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) >= 3
    model = json.loads((folder / "latency_model.onnxruntime-int8.json").read_text())
    assert model["fingerprint"]["threads"] == 1 and model["fingerprint"]["seq"] == 16
    assert model["teacher_ms"] and model["anchors"]
    for t in study.get_trials(states=COMPLETE):
        config, s = t.user_attrs["config"], TrialScore.model_validate(t.user_attrs["score"])
        assert set(config) == set(SPACE) and s.form == "student.int8" and s.target == "onnxruntime-int8"
        assert t.values == [s.validation["accuracy"], s.predicted_ms]  # the search optimizes the prediction
        assert (Path(s.path) / "metrics.json").is_file() and s.latency.p10_ms > 0
        assert s.measured_speedup > 0 < s.predicted_speedup
        assert len(s.arch.heads) == config["passes.convert.layers"]
        assert ",".join(map(str, s.arch.groups.values())) == config["passes.convert.groups"]
    teacher = read_info(folder).teacher
    assert set(teacher.forms) == teacher_forms() and teacher.fastest().latency.speedup == 1.0
    assert teacher.model.natural.texts == 6 and 0 <= teacher.score("test") <= 1


@pytest.mark.integration
def test_finalize_retrains_the_front_and_times_it_with_the_baselines(finished_study):
    folder = finished_study.folder
    frontier = frontier_of(folder)
    kinds = [e.kind for e in frontier.entries]
    # top_k 2, and a challenger per baseline
    assert kinds[0] == "teacher" and kinds.count("baseline") == 2 and 1 <= kinds.count("final") <= 2 + 2
    assert frontier.reference == f"teacher/{frontier.entries[0].best().form}" and frontier.repeats == 2
    for e in frontier.entries:
        for f in e.forms.values():
            assert f.latency.speedup == pytest.approx(frontier.reference_ms / f.latency.p10_ms)
            assert f.natural.texts == 6 and "test" in f.splits
    finals = [e for e in frontier.entries if e.kind == "final"]
    for e in finals:  # at full budget
        assert read_metrics(Path(e.path) / "metrics.json").reports["distill"]["student"]["history"][-1]["epoch"] == 2
    challenged = [c for e in finals for c in e.challenges]  # each baseline has at most one challenger, a final student
    assert len(challenged) == len(set(challenged)) and set(challenged) <= {"layerdrop", "pruned"}
    layerdrop = next(e for e in frontier.entries if e.name == "layerdrop")
    assert len(layerdrop.arch.heads) == 1 and set(layerdrop.arch.groups.values()) == {1}  # every other of 2, dense
    pruned = next(e for e in frontier.entries if e.name == "pruned")
    assert pruned.arch.ffn == 32  # half of the teacher's 64
    saved = LatencyModel.model_validate_json((folder / "latency_model.onnxruntime-int8.json").read_text())
    assert not saved.missing([pruned.arch])  # its pruned head counts were timed once and kept with the model


@pytest.mark.integration
def test_final_students_and_baselines_are_compared_in_every_form_the_teacher_is_timed_in(finished_study):
    """Trials build only the target (ONNX Runtime int8); finalize adds every other form the teacher is timed in,
    scored on the run's splits, in <run>/forms.json (the run's own metrics.json untouched), and each entry is
    reported in its fastest form."""
    frontier = frontier_of(finished_study.folder)
    teacher = {(f.runtime, f.precision) for f in frontier.entries[0].forms.values()}
    assert len(teacher) >= 3  # PyTorch, ONNX Runtime fp32 and int8 (and OpenVINO's two when installed)
    targets = teacher_targets(finished_study.folder / "reference")
    for e in frontier.entries[1:]:
        run = Path(e.path)
        assert {(f.runtime, f.precision) for f in e.forms.values()} == teacher, e.name
        assert all(f.latency and f.latency.p10_ms > 0 and "test" in f.splits for f in e.forms.values())
        assert e.best().latency.p10_ms == min(f.latency.p10_ms for f in e.forms.values())
        own = set(read_metrics(run / "metrics.json").forms_of("student"))
        added = added_forms(run)
        assert own.isdisjoint(added) and own | set(added) == set(e.forms)
        assert {f.path for f in added.values() if f.path} <= {str(p.relative_to(run)) for p in run.rglob("*")}
        fp32 = [f.splits["test"]["accuracy"] for f in e.forms.values() if f.precision == "fp32"]
        assert max(fp32) - min(fp32) <= 0.02  # one fp32 model in every runtime: the same predictions, near enough
        assert add_forms(run, "student", targets, 1) == []  # nothing rebuilt a second time
    # forms an older exporter added (forms.json before it kept the inference-form version) are rebuilt, not reused
    (run / ADDED).write_text(json.dumps({k: v.model_dump(mode="json") for k, v in added.items()}))
    built = {f.path: (run / f.path).stat().st_mtime_ns for f in added.values() if f.path}
    assert set(add_forms(run, "student", targets, 1)) == set(added)
    assert json.loads((run / ADDED).read_text())["inference_form"] == FORM_VERSION
    assert set(added_forms(run)) == set(added)
    assert all((run / path).stat().st_mtime_ns > t for path, t in built.items())  # the artifacts too, not reused


@pytest.mark.integration
def test_every_final_student_is_compared_with_every_rival_on_the_same_texts(finished_study):
    frontier = frontier_of(finished_study.folder)
    teacher = frontier.entries[0]
    rivals = {f"teacher/{f}": ev for f, ev in teacher.forms.items()}  # the teacher's forms, each baseline's fastest
    rivals |= {f"{e.name}/{e.best().form}": e.best() for e in frontier.entries if e.kind == "baseline"}
    for e in (e for e in frontier.entries if e.kind == "final"):
        assert [p.rival for p in e.paired] == list(rivals)
        assert all(p.form == e.best().form and p.n == e.best().splits["test"].n for p in e.paired)
        for p in e.paired:  # the difference of the scores the runs recorded, re-predicted from the artifacts on disk
            test = e.best().splits["test"]["accuracy"]
            assert p.diff == pytest.approx(test - rivals[p.rival].splits["test"]["accuracy"])
            assert p.ci95[0] <= p.ci95[1] and p.metric == "accuracy"


@pytest.mark.integration
def test_the_latency_model_is_checked_on_the_trials_re_timed_together(finished_study):
    """Every finished trial's student re-timed beside the teacher's forms, after the search."""
    frontier = frontier_of(finished_study.folder)
    trials = scored(load(finished_study.folder / "study.db"))
    assert sorted(t.trial for t in frontier.trials) == (sorted(trials) if len(trials) >= 2 else [])
    for t in frontier.trials:
        assert t.predicted_speedup == trials[t.trial].predicted_speedup and t.form == "student.int8"
        assert t.p10_ms > 0 < t.speedup
        assert t.reference.removeprefix("teacher/") in teacher_forms()  # the fastest of the check's own session


@pytest.mark.integration
def test_a_finished_study_is_refused_without_resume_and_reused_with_it(finished_study, cli):
    """The same study again: refused without --resume; with it, nothing more to do (finalize reuses its runs)."""
    folder, frontier = finished_study.folder, frontier_of(finished_study.folder)
    trials = len(load(folder / "study.db").trials)
    code, _, err = cli("search", finished_study.recipe)
    assert code == 2 and "--resume" in err
    code, _, err = cli("search", finished_study.recipe, "--resume")
    assert code == 0 and len(load(folder / "study.db").trials) == trials
    assert frontier_of(folder) == frontier  # nothing retrained: timing kept


@pytest.mark.integration
def test_report_of_a_finished_study(finished_study, tmp_path, cli):
    folder, frontier = finished_study.folder, frontier_of(finished_study.folder)
    study = load(folder / "study.db")
    out_dir = tmp_path / "report"
    code, _, err = cli("report", folder, "--out", out_dir)
    assert code == 0, err
    csv = pd.read_csv(out_dir / "trials.csv")
    forms = len(teacher_forms())  # the teacher in each of its forms: one row each (the frontier's teacher entry is one)
    assert len(csv) == len(study.trials) + len(frontier.entries) + forms - 1
    columns = {"val_score", "test_score", "latency_ms", "speedup", "predicted_ms", "measured_speedup", "groups", "kind"}
    assert columns <= set(csv.columns)
    summary = json.loads((out_dir / "summary.json").read_text())
    rivals = [(b["kind"], b["name"]) for b in summary["baselines"]]
    assert [k for k, _ in rivals] == ["teacher"] * forms + ["peer"] * 2, rivals
    assert [n for k, n in rivals if k == "peer"] == ["layerdrop", "pruned"], rivals
    assert summary["baselines_total"] == forms + 2  # the peers and the teacher in every deploy form
    finals = [e for e in frontier.entries if e.kind == "final"]
    assert summary["reference"] == frontier.reference and len(summary["finals"]) == len(finals)
    teacher_width = json.loads((folder / "reference" / "models" / "teacher" / "config.json").read_text())["hidden_size"]
    assert all(f["layers"] >= 1 and f["hidden"] == teacher_width for f in summary["finals"]), summary["finals"]
    p = summary["predictor"]
    assert p["trials"] == len(frontier.trials) >= 2 and -1 <= p["spearman"] <= 1 and p["measured"] == "re-timed"
    assert p["own_runs"]["trials"] == len(scored(study))
    retimed = csv.set_index("trial")["retimed_speedup"].dropna().to_dict()
    assert retimed == pytest.approx({t.trial: t.speedup for t in frontier.trials})
    for f in summary["finals"]:  # natural lengths: the entry's fastest form there, named, which may be another
        entry = next(e for e in finals if e.name == f["name"])
        natural = {k: ev.natural.mean_ms for k, ev in entry.forms.items()}
        assert f["natural_form"] == min(natural, key=natural.get) and f["natural_ms"] == min(natural.values())
    speed = {f["name"]: f["speedup"] for f in summary["finals"]}
    for b in summary["baselines"]:  # the most accurate final student at least as fast, when one is
        c = b["paired"]
        assert c is None or (speed[c["student"]] >= b["speedup"] and c["ci95"][0] <= c["ci95"][1]), b
        assert (c is not None) == any(v >= b["speedup"] for v in speed.values())
    matched = sum(b["paired"] is not None and b["paired"]["ci95"][1] >= 0 for b in summary["baselines"])
    assert summary["baselines_matched_paired"] == matched
    assert summary["budget"] == {
        "finished": len(study.trials),
        "wanted": 3,
        "timeout": None,
        "finalize_timeout": None,
        "finals_skipped": 0,
    }
    md = (out_dir / "report.md").read_text()
    assert "re-timed together after the search" in md and "re-timed x" in md and "](predictor.png)" in md
    assert (out_dir / "predictor.png").read_bytes()[:4] == b"\x89PNG"
    assert 'src="predictor.png"' in (out_dir / "index.html").read_text()
    unmatched = sum(b["paired"] is None for b in summary["baselines"])
    assert "paired test comparison" in md and md.count("no final student as fast") == unmatched
    assert md.count("(challenger of ") == sum(bool(e.challenges) for e in finals)  # named in the finals' table
    assert "Final students vs what you get without compress" in md and "layerdrop" in md
    assert frontier.reference in md and "pareto.png" in md
    counts = ", ".join(f"{v} {k.lower()}" for k, v in summary["trials"].items())
    assert f"## Search: proxy trials ({counts})" in md and "{" not in counts  # counts as words, not a dict
    assert (out_dir / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    html = (out_dir / "index.html").read_text()
    assert f"Proxy trials: {counts}." in html
    check_offline_html(
        html, front_size=summary["front_size"], finals=len(frontier.entries) + forms - 1, rivals=forms + 2
    )


@pytest.mark.integration
def test_retime_times_the_same_runs_again(finished_study, tmp_path, cli, monkeypatch):
    """--retime: the same runs timed again, nothing retrained (the study folder spelled relative this time)."""
    folder, frontier = finished_study.folder, frontier_of(finished_study.folder)
    monkeypatch.chdir(finished_study.root)
    code, _, err = cli(
        "finalize", folder.relative_to(finished_study.root), "--retime", "--out", tmp_path / "again.json"
    )
    assert code == 0, err
    again = Frontier.model_validate(json.loads((tmp_path / "again.json").read_text()))
    assert [e.path for e in again.entries] == [e.path for e in frontier.entries]
    assert [p.diff for e in again.entries for p in e.paired] == [p.diff for e in frontier.entries for p in e.paired]
    assert [t.trial for t in again.trials] == [t.trial for t in frontier.trials]  # and the latency model checked again


@pytest.mark.integration
def test_a_frontier_from_before_paired_tests_and_the_check_gets_them(finished_study, cli):
    """A frontier timed before paired comparisons and the latency model's check existed gets them on the next
    finalize; its timing is kept."""
    path = finished_study.folder / "final" / "frontier.json"
    original = path.read_text()
    frontier = Frontier.model_validate_json(original)
    bare = frontier.model_copy(
        update={"entries": [e.model_copy(update={"paired": []}) for e in frontier.entries], "trials": []}
    )
    try:
        path.write_text(bare.model_dump_json())
        code, _, err = cli("finalize", finished_study.folder)
        assert code == 0, err
        upgraded = frontier_of(finished_study.folder)
        assert upgraded.entries == frontier.entries
        assert [t.trial for t in upgraded.trials] == [t.trial for t in frontier.trials]
    finally:
        path.write_text(original)  # the shared study as the other tests know it


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.external, self.scripts, self.ids, self.rows, self._in = [], [], set(), 0, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag in ("script", "link", "img") and any(
            str(a.get(k, "")).startswith(("http:", "https:", "//")) for k in ("src", "href")
        ):
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


def check_offline_html(text: str, front_size: int, finals: int, rivals: int) -> None:
    """Parse the page: self-contained, with the plot, the final table, the paired comparisons and the proxy front."""
    page = _Page()
    page.feed(text)
    assert not page.external, page.external  # nothing loaded from a CDN
    assert max(page.scripts) > 1_000_000  # plotly.js embedded
    assert {"frontier", "pareto", "finals", "paired"} <= page.ids
    # header + one row per front student; header + teacher form, final or baseline; header + rival
    assert page.rows == front_size + 1 + finals + 1 + rivals + 1
    assert "Plotly.newPlot(" in text and '"frontier"' in text


def test_search_bad_input_is_refused_before_any_work(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    cases = [
        ({"space": {}}, "search.space is empty"),
        ({"space": {"passes.convert.groups": {"groups": [1, 3]}}}, "valid: 1, 2, 4"),
        ({"space": {"passes.convert.groups": {"choices": ["4,4,4,1,4,5"]}}}, "groups.output=5"),
        ({"space": {"passes.distill.epoch": {"choices": [1, 2]}}}, "did you mean 'epochs'"),
        ({"space": {"passes.distill.lr": {"choices": [1], "low": 1, "high": 2}}}, "exactly one of"),
        (
            {"baselines": ["layerdrop", "prunned"]},
            "search.baselines[1]: unknown baseline 'prunned'; did you mean 'pruned'? available: layerdrop, pruned",
        ),
        ({"target": "onnxruntime-int4"}, "unknown deploy target 'onnxruntime-int4' (did you mean 'onnxruntime-int8'?)"),
        ({"target": "tensorrt-int8"}, "unknown deploy target 'tensorrt-int8'"),
        ({"baselines": [{"name": "layerdrop", "options": {"layer": [1]}}]}, "(layerdrop).options.layer: unknown key"),
        ({"baselines": [{"name": "pruned", "options": {"ffn_ration": 0.5}}]}, "did you mean 'ffn_ratio'"),
        ({"timeout": 0}, "search.timeout"),
        (
            {"space": SPACE | {"passes.quantize.enabled": {"choices": [True, False]}}},
            "search.target onnxruntime-int8 needs the student in that form",
        ),
        (
            {"seeds": [{"passes.convert.layer": 1}]},
            "seeds[0].passes.convert.layer: not a key of search.space; did you mean 'passes.convert.layers'?",
        ),
        (
            {"seeds": [{"passes.convert.layers": 3}]},
            "search.seeds[0].passes.convert.layers: 3 is not one of the space's choices [1, 2]",
        ),
        (
            {"seeds": [{"passes.convert.groups": "1,1,1,1,1,8"}]},
            "must be 6 group counts (q,k,v,post,inter,out) from [1, 2, 4]",
        ),
        (
            {"seeds": [{}, {"passes.distill.lr": 0.1}]},
            "search.seeds[1].passes.distill.lr: 0.1 is outside the space's range [0.0001, 0.001]",
        ),
        (
            {"finalize": {"set": {"passes.distill.epoch": 3}}},
            "(search.finalize.set): passes[2] (distill).options.epoch: unknown key; did you mean 'epochs'?",
        ),
    ]
    for search, needle in cases:  # refused before any work, and `validate` refuses the same
        recipe = write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, **search)
        for command in ("search", "validate"):
            code, _, err = cli(command, recipe)
            assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (command, search, err)
    assert not (tmp_path / "results").exists()


@pytest.mark.integration
def test_budgets_stop_the_search_and_finalize_and_the_report_says_so(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    """search.timeout: no trial starts after it, the study is finalized with what it found; finalize.timeout: only
    the first chosen student is retrained once it is spent; the report says both."""
    from compress.finalize.front import pick

    finalize = FINALIZE | {"top_k": 3, "timeout": 0.001, "check_trials": 0}
    recipe = write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, trials=40, timeout=1, prune=False, finalize=finalize)
    code, _, err = cli("search", recipe)
    assert code == 0, err
    folder = tmp_path / "results" / "tiny"
    finished = load(folder / "study.db").get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert 1 <= len(finished) < 40 and "the search budget (search.timeout 1 s) is spent" in err, err
    frontier = frontier_of(folder)
    chosen = pick(sorted(scored(load(folder / "study.db")).items()), 3)
    assert [e.trial for e in frontier.entries if e.kind == "final"] == [chosen[0][0]]  # the fastest pick only
    assert frontier.budget is not None and frontier.budget.seconds == 0.001
    assert frontier.budget.skipped == len(chosen) - 1
    code, _, err = cli("report", folder, "--out", tmp_path / "report")
    assert code == 0, err
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"({len(finished)} of 40 wanted in the 1-second budget (search.timeout))" in md
    assert ("not retrained: the finalize budget" in md) == (len(chosen) > 1)


@pytest.mark.integration
def test_a_changed_recipe_is_refused_until_force_new(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    recipe = write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, trials=1)
    code, _, err = cli("search", recipe, "--storage", f"sqlite:///{tmp_path}/no/such/dir/x.db")
    assert code == 2 and "cannot open study storage" in err
    assert cli("search", recipe)[0] == 0
    changed = write_recipe(
        tmp_path, tiny_csv, tiny_teacher_dir, trials=1, space={"passes.convert.layers": {"choices": [1, 2]}}
    )
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
    assert (
        code == 2 and "no teacher reference this compress version reads" in err and len(err.strip().splitlines()) == 1
    )
    teacher = TeacherReference(forms={})
    (folder / "search.json").write_text(
        json.dumps({"study": "empty", "storage": url, "teacher": teacher.model_dump(mode="json")})
    )
    code, _, err = cli("report", folder, "--out", tmp_path / "r")
    assert code == 2 and "no finished trial" in err and not (tmp_path / "r").exists()
    code, _, err = cli("report", tmp_path / "nothing-here")
    assert code == 2 and "neither a study folder" in err
    (folder / "search.json").write_text(
        json.dumps({"study": "empty", "storage": url, "teacher": teacher.model_dump(mode="json"), "recipe": "r.yaml"})
    )
    code, _, err = cli("finalize", folder)
    assert code == 2 and "recipe 'r.yaml' not found" in err
    code, _, err = cli("finalize", tmp_path / "nothing-here")
    assert code == 2 and "not a study folder (no search.json)" in err
    # a study name the storage does not hold: one line from report and finalize alike
    quickstart = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml"
    info = {"study": "missing", "storage": url, "teacher": teacher.model_dump(mode="json"), "recipe": str(quickstart)}
    (folder / "search.json").write_text(json.dumps(info))
    for command in (("report", folder, "--out", tmp_path / "r"), ("finalize", folder)):
        code, _, err = cli(*command)
        assert code == 2 and "cannot open study 'missing'" in err and len(err.strip().splitlines()) == 1, err


def arch(layers: int = 1, ms: float = 1.0) -> Architecture:
    """A tiny architecture; `ms` sets its FFN width, so trials of other latencies differ in architecture too."""
    return Architecture(hidden=32, head_size=8, heads=[4] * layers, ffn=int(ms * 16), groups={}, labels=3)


def _points(rows):
    return pd.DataFrame(
        [
            {
                "source": "s",
                "trial": i,
                "name": f"s#{i}",
                "state": "COMPLETE",
                "feasible": True,
                "val_score": a,
                "speedup": x,
                "test_score": a,
            }
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
    for bad in (
        {},
        {"low": 2, "high": 1},
        {"low": 0, "high": 1, "log": True},
        {"choices": []},
        {"groups": [1], "groups_up_to": 4},
    ):
        with pytest.raises(ValueError):
            Param(**bad)


def test_score_requires_timed_student():
    from compress.core.records import FormEval, RunMetrics, SplitScores
    from compress.recipe.search import SearchSpec
    from compress.study.objective import score

    fp32 = FormEval(
        form="student",
        model="student",
        runtime="torch",
        precision="fp32",
        splits={"validation": SplitScores(n=1, metrics={"accuracy": 1.0})},
    )
    metrics = RunMetrics(name="t", status="complete", compress_version="x", evaluations={"student": fp32})
    with pytest.raises(
        CompressError, match=r"did not score student 'student' in search\.target onnxruntime-int8 on validation"
    ):
        score(metrics, SearchSpec(space={}), None, Path("."), None)


def test_groups_up_to_offers_the_divisors(tmp_path, tiny_csv, tiny_teacher_dir):
    from compress.recipe import load_recipe
    from compress.study.space import check_space

    recipe = load_recipe(
        write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, space={"passes.convert.groups": {"groups_up_to": 12}})
    )
    check_space(recipe, recipe.search, "r.yaml")
    assert recipe.search.space["passes.convert.groups"].groups == [1, 2, 4, 8]  # hidden 32, FFN 64
    # a searched width narrows what every student may use (hidden 8: at most 8 groups; 16: 16), and a fixed group
    # count that a searched width cannot take is refused before any training
    space = {"passes.convert.groups": {"groups_up_to": 32}, "passes.convert.hidden_size": {"choices": [32, 8]}}
    recipe = load_recipe(write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, space=space))
    check_space(recipe, recipe.search, "r.yaml")
    assert recipe.search.space["passes.convert.groups"].groups == [1, 2, 4, 8]
    space = {
        "passes.convert.groups": {"choices": ["1,1,1,1,16,16"]},
        "passes.convert.hidden_size": {"choices": [32, 8]},
    }
    recipe = load_recipe(write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, space=space))
    with pytest.raises(
        CompressError, match=r"search.space.passes.convert.groups: groups.intermediate=16 must divide its 8"
    ):
        check_space(recipe, recipe.search, "r.yaml")
    # a width no student can have is refused before any training, with or without group counts in the space
    space = {"passes.convert.hidden_size": {"choices": [None, 12]}}
    recipe = load_recipe(write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, space=space))
    with pytest.raises(CompressError, match=r"hidden_size: \[12\] - use multiples of the teacher's head size 8 up"):
        check_space(recipe, recipe.search, "r.yaml")


def test_front_of_a_subset_keeps_row_labels():
    pts = _points([(0.80, 1.0), (0.79, 4.0), (0.72, 8.0)])
    pts.index = [10, 11, 12]  # e.g. the second study of an overlaid report
    assert list(pareto(pts)["trial"]) == [2, 1, 0]


def test_hypervolume_2d_matches_optunas_own():
    """Our 2-D hypervolume (Optuna has no public one) against Optuna's private implementation, on random fronts."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    from compress.report.frontier import hypervolume_2d

    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 30):
        pts = rng.random((n, 2))
        ref = np.array([1.1, 1.2])
        assert hypervolume_2d(pts, ref) == pytest.approx(compute_hypervolume(pts, ref), rel=1e-12)
    assert hypervolume_2d(np.array([[0.0, 0.5], [0.5, 0.0]]), np.array([1.0, 1.0])) == pytest.approx(0.75)


def test_finalists_are_distinct_front_architectures_spread_along_it():
    from compress.core.records import SplitScores
    from compress.finalize.front import challengers, pick

    def score(acc, ms, layers=3, feasible=True):
        return TrialScore(
            form="s",
            path="p",
            target="t",
            validation=SplitScores(n=1, metrics={"accuracy": acc}),
            test=None,
            predicted_ms=ms,
            predicted_speedup=1.0,
            latency=None,
            size_mb=1.0,
            arch=arch(layers, ms),
            constraints=[0.0],
            feasible=feasible,
        )

    trials = [
        (0, score(0.70, 2.0)),
        (1, score(0.72, 3.0)),
        (2, score(0.74, 4.0)),
        (3, score(0.76, 5.0)),
        (4, score(0.75, 6.0)),  # 4: dominated
        (5, score(0.80, 1.0, feasible=False)),
        (6, score(0.78, 7.0)),
        (7, score(0.78, 7.0).model_copy(update={"arch": arch(3, 7.0)})),  # the same architecture as 6
    ]
    # the infeasible and the dominated never; one per architecture
    assert [n for n, _ in pick(trials, 10)] == [0, 1, 2, 3, 6]
    assert [n for n, _ in pick(trials, 3)] == [0, 2, 6]  # from the fastest to the most accurate
    assert [n for n, _ in pick(trials, 1)] == [2]  # one: the middle of the front
    assert [n for n, _ in pick(trials, 2, "fastest")] == [0, 1]  # finalize.pick: fastest (5 is infeasible)

    none_feasible = [(n, s.model_copy(update={"feasible": False})) for n, s in trials]
    assert [n for n, _ in pick(none_feasible, 3)] == [5]  # none feasible: front of all
    # against each baseline: the best feasible student predicted no slower than it (dominated ones included)
    found = challengers(trials, {"slow": 6.5, "mid": 4.0, "same": 2.0, "fast": 0.5})  # baseline -> its predicted ms
    # 5 is faster but infeasible; none for "fast"
    assert {name: n for name, (n, _) in found.items()} == {"slow": 3, "mid": 2, "same": 0}
    # none feasible: among all
    assert {name: n for name, (n, _) in challengers(none_feasible, {"fast": 1.5}).items()} == {"fast": 5}
    # scores within one standard error of the best (its 95% interval / 3.92 = 0.02 here) are tied: the slowest of them;
    # a margin (the latency model's typical error) keeps students predicted too close to the baseline out
    ci = lambda s: SplitScores(n=1, metrics={"accuracy": s.value}, ci95={"accuracy": (s.value - 0.04, s.value + 0.04)})
    noisy = [(n, s.model_copy(update={"validation": ci(s)})) for n, s in trials]
    assert {name: n for name, (n, _) in challengers(noisy, {"slow": 6.5, "mid": 4.0}).items()} == {"slow": 4, "mid": 2}
    assert {name: n for name, (n, _) in challengers(noisy, {"slow": 6.5, "mid": 4.0}, margin=0.1).items()} == {
        "slow": 3,
        "mid": 1,
    }


def test_latency_error_is_the_spread_of_within_run_ratios():
    """The margin between a challenger and its baseline: a bias common to every trial (predicted speed-ups all 12%
    high) is no error between two architectures; one trial timed on a busy minute moves the median deviation little."""
    from compress.core.records import SplitScores
    from compress.finalize.front import latency_error

    def timed(pred, meas):
        lat = latency(seq=128, threads=2, gflops=1.0, speedup=meas)
        return TrialScore(
            form="s",
            path="p",
            target="t",
            validation=SplitScores(n=1, metrics={"accuracy": 0.7}),
            test=None,
            predicted_ms=1.0,
            predicted_speedup=pred,
            latency=lat,
            size_mb=1.0,
            arch=arch(),
            constraints=[0.0],
            feasible=True,
        )

    measured = [1.0, 1.5, 2.0, 2.5, 3.0]
    assert latency_error([(i, timed(1.12 * m, m)) for i, m in enumerate(measured)]) == pytest.approx(0.0, abs=1e-12)
    spread = [1.12 * m * f for m, f in zip(measured, [1.0, 1.05, 0.95, 1.05, 1.0], strict=True)]
    assert latency_error(
        [(i, timed(p, m)) for i, (p, m) in enumerate(zip(spread, measured, strict=True))]
    ) == pytest.approx(0.05, abs=0.002)
    busy = [(9, timed(1.97, 1.36))]  # predicted 1.97x, measured 1.36x on a slow minute
    assert (
        latency_error([*((i, timed(p, m)) for i, (p, m) in enumerate(zip(spread, measured, strict=True))), *busy])
        < 0.06
    )
    assert latency_error(busy) == 0.0 and latency_error([]) == 0.0


def test_trials_whose_folders_are_gone_are_not_re_timed(tmp_path):
    """A study whose trial folders were cleaned up: the latency model's check has nothing to time and says so by
    returning no timings (finalize then logs that it skipped it), before loading anything."""
    from compress.finalize.timing import time_trials

    score = TrialScore(
        form="student.int8",
        path=str(tmp_path / "gone"),
        target="onnxruntime-int8",
        validation=SplitScores(n=1, metrics={"accuracy": 0.7}),
        test=None,
        predicted_ms=1.0,
        predicted_speedup=2.0,
        latency=None,
        size_mb=1.0,
        arch=arch(),
        constraints=[0.0],
        feasible=True,
    )
    assert time_trials(None, None, tmp_path / "reference", [(0, score), (1, score)]) == []  # type: ignore[arg-type]


def test_finalize_budget_admits_the_first_then_what_time_allows():
    from compress.finalize.finalize import Budget

    clock = iter([0.0, 5.0, 20.0, 21.0])
    budget = Budget(10, clock=lambda: next(clock))  # starts at 0 s
    assert budget.admit("a") and budget.admit("b")  # the first always (no clock read); then at 5 s, inside
    assert not budget.admit("c")  # at 20 s: spent
    assert budget.record() == BudgetUse(seconds=10, used_s=21.0, skipped=1)
    unlimited = Budget(None)
    assert all(unlimited.admit(x) for x in "abc") and unlimited.record() is None


def test_trial_counts_say_what_the_search_budget_left_out():
    from compress.report.summary import SearchBudget

    def said(budget: SearchBudget, trials: dict[str, int]) -> str:
        fields = dict.fromkeys(ReportSummary.model_fields)
        return ReportSummary.model_construct(**(fields | {"trials": trials, "budget": budget})).trial_counts()

    done = {"COMPLETE": 3, "PRUNED": 1}
    assert said(SearchBudget(finished=4, wanted=4), done) == "3 complete, 1 pruned"
    assert said(SearchBudget(finished=4, wanted=8, timeout=240), done) == (
        "3 complete, 1 pruned (4 of 8 wanted in the 4-minute budget (search.timeout))"
    )
    assert said(SearchBudget(finished=4, wanted=8, timeout=90), done).endswith(
        "in the 90-second budget (search.timeout))"
    )
    assert said(SearchBudget(finished=4, wanted=8), done) == "3 complete, 1 pruned (4 of 8 wanted)"


def test_spread_keeps_both_ends():
    from compress.finalize.front import spread

    assert spread(list(range(10)), 3) == [0, 4, 9] and spread(list(range(10)), 1) == [5] and spread([1, 2], 5) == [1, 2]


def test_predictor_quality_prefers_the_trials_re_timed_together():
    """The report's latency-model figure: over the trials re-timed after the search when two or more were, else as
    each trial's own run measured them; both are in the summary."""
    from compress.report.summary import predictor_quality

    points = pd.DataFrame(
        {
            "kind": ["trial"] * 3 + ["final"],
            "speedup": [1.1, 2.2, 3.3, 9.0],
            "measured_speedup": [1.0, 2.0, 3.0, 1.0],
            "retimed_speedup": [1.1, 2.2, 3.0, 1.0],
        }
    )
    q = predictor_quality(points)
    assert q.measured == "re-timed" and q.trials == 3
    assert q.median_abs_err == pytest.approx(0.0) and q.spearman == pytest.approx(1.0)
    own = q.own_runs
    assert own.trials == 3 and own.spearman == pytest.approx(1.0) and own.median_abs_err == pytest.approx(0.1)
    q = predictor_quality(points.assign(retimed_speedup=[None, 2.0, None, None]))  # one re-timed trial says nothing
    assert q.measured == "own run" and q.median_abs_err == pytest.approx(0.1)
    assert predictor_quality(points.drop(columns=["measured_speedup", "retimed_speedup"])).spearman is None


@pytest.mark.integration
def test_seeds_are_tried_first(finished_study):
    """A seeded configuration (here the dense, one-layer student) runs before anything is sampled; keys it leaves
    out are sampled; resuming does not queue it again (test_a_finished_study_is_refused_without_resume_...)."""
    trials = load(finished_study.folder / "study.db").trials
    groups = [{k: v for k, v in t.params.items() if ".groups." in k} for t in trials]
    assert set(groups[0].values()) == {1} and trials[0].params["passes.convert.layers"] == 1 and len(groups[0]) == 6
    assert set(groups[1].values()) == {2} and "passes.convert.layers" in trials[1].params  # sampled
    assert trials[0].user_attrs["config"]["passes.convert.groups"] == "1,1,1,1,1,1"


@pytest.mark.integration
def test_a_natural_length_study_predicts_times_and_reports_per_text(tmp_path, tiny_teacher_dir, cli):
    """search.latency_shape natural: the latency model is fitted on whole models run over real validation texts at
    their own lengths (per text), trials are ranked by that, and finalize times everything the same way."""
    import yaml

    from compress.data.encoding import encode
    from compress.data.sources import load_task
    from compress.modeling.loading import load_tokenizer
    from compress.recipe import parse_recipe
    from compress.study.latency import NATURAL_TEXTS
    from conftest import make_rows

    rows = make_rows(240)
    rows["text"] = [t + " and so on" * (i % 4) for i, t in enumerate(rows["text"])]  # texts of several lengths
    csv = tmp_path / "varied.csv"
    rows.to_csv(csv, index=False)
    finalize = {"top_k": 1, "runs": 3, "repeats": 1, "natural_texts": 4, "check_trials": 2}
    recipe = write_recipe(tmp_path, csv, tiny_teacher_dir, trials=2, latency_shape="natural", finalize=finalize)
    code, _, err = cli("search", recipe)
    assert code == 0, err
    folder = tmp_path / "results" / "tiny"
    r = parse_recipe(yaml.safe_load(recipe.read_text()), "test")
    validation = encode(load_task(r.task, r.seed).splits["validation"], load_tokenizer(str(tiny_teacher_dir)), 16, None)
    lengths = validation.lengths()
    assert lengths.min() < lengths.max() <= 16  # real texts of several lengths, none padded to the maximum
    model = LatencyModel.model_validate_json((folder / "latency_model.onnxruntime-int8.json").read_text())
    fp = model.fingerprint
    assert fp.shape == "natural" and fp.batch == 1 and lengths.min() <= fp.seq < lengths.max()
    assert len(validation) <= NATURAL_TEXTS and fp.seq == round(float(lengths.mean()))  # all drawn; blocks at the mean
    for t in load(folder / "study.db").get_trials(states=COMPLETE):
        s = TrialScore.model_validate(t.user_attrs["score"])
        assert s.latency is None and s.predicted_speedup > 0  # its own padded timing is not what was predicted
    frontier = frontier_of(folder)
    assert frontier.latency_shape == "natural" and frontier.seq == fp.seq and len(frontier.trials) == 2
    for e in frontier.entries:
        assert all(f.latency.shape == "natural" and f.latency.seq == fp.seq for f in e.forms.values())
    assert frontier.entries[0].forms[frontier.reference.split("/")[1]].latency.speedup == 1.0
    code, _, err = cli("report", folder, "--out", tmp_path / "report")
    assert code == 0, err
    assert "batch 1 over real texts at their own lengths" in (tmp_path / "report" / "report.md").read_text()
