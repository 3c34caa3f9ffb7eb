"""`compress report`: the accuracy/latency frontier of one or more studies (or plain runs).

    reports/<name>/index.html   interactive scatter (plotly, embedded: works offline), Pareto front, tables
    reports/<name>/report.md    the same tables for git, with pareto.png
    reports/<name>/trials.csv   every trial and metric (pandas)

Points are read from typed records (a study's `TrialScore`s, a run's `RunMetrics`) into one DataFrame;
everything shown is derived from that frame. The front is chosen on *validation* accuracy (what the search
optimized) and reported with *test* accuracy, so the test split never influences which students are shown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from pydantic import ValidationError

from compress.core.atomic import atomic_dir
from compress.core.errors import CompressError
from compress.core.records import FormEval, TeacherReference, TrialScore, read_metrics
from compress.search.frontier import budgets, hypervolume, knee, pareto
from compress.search.render import render_html, render_markdown, render_png


def load_points(source: Path) -> tuple[pd.DataFrame, TeacherReference]:
    """All scored points of a study folder (search.json) or a run folder (metrics.json), and its teacher."""
    source = Path(source)
    if (source / "search.json").is_file():
        info = json.loads((source / "search.json").read_text())
        try:
            teacher = TeacherReference.model_validate(info["teacher"])
        except (KeyError, ValidationError) as e:
            why = f"{e.errors()[0]['msg']} at {e.errors()[0]['loc']}" if isinstance(e, ValidationError) else f"no {e}"
            raise CompressError(
                f"{source}/search.json: no teacher reference this compress version reads ({why}); rerun compress search --resume to measure it again"
            ) from None
        try:
            study = optuna.load_study(study_name=info["study"], storage=info["storage"])
        except Exception as e:
            raise CompressError(f"{source}: cannot open study {info['study']!r} in {info['storage']} ({str(e).splitlines()[0]})") from None
        rows = []
        for t in study.trials:
            a = t.user_attrs
            score = TrialScore.model_validate(a["score"]) if "score" in a else None
            rows.append(
                {
                    "source": source.name,
                    "trial": t.number,
                    "state": t.state.name,
                    **_row(score),
                    "config": json.dumps(a.get("config", {}), sort_keys=True),
                    "error": a.get("error"),
                    "pruned_by": a.get("pruned_by"),
                }
            )
        return pd.DataFrame(rows), teacher
    if (source / "metrics.json").is_file():
        m = read_metrics(source / "metrics.json")
        ev = m.evaluations.get("teacher")
        if m.status != "complete" or ev is None or "validation" not in ev.splits or ev.latency is None:
            raise CompressError(f"{source}: run is not complete or did not evaluate and time the teacher; rerun it, or report a study folder")
        teacher = TeacherReference(validation=ev.splits["validation"], test=ev.splits.get("test"), latency={"teacher": ev.latency})
        rows = [
            {"source": source.name, "trial": i, "state": "COMPLETE", **_row(_as_score(v, str(source))), "config": k}
            for i, (k, v) in enumerate(m.evaluations.items())
            if k != "teacher" and v.latency is not None and "validation" in v.splits
        ]
        return pd.DataFrame(rows), teacher
    raise CompressError(f"{source}: neither a study folder (search.json) nor a run folder (metrics.json); pass results/<study> or results/<run>")


def _as_score(ev: FormEval, path: str) -> TrialScore:
    """A form of a plain run, as the report sees a trial (no architecture details, always feasible)."""
    assert ev.latency is not None
    return TrialScore(
        form=ev.form,
        path=path,
        validation=ev.splits["validation"],
        test=ev.splits.get("test"),
        latency=ev.latency,
        speedup=ev.latency.speedup or 1.0,
        size_mb=ev.size_mb or 0.0,
        layers=0,
        intermediate_size=0,
        groups="",
        constraints=[0.0],
        feasible=True,
    )


def _row(s: TrialScore | None) -> dict[str, Any]:
    """The report's columns for one scored point (NaN where a trial has no score)."""
    if s is None:
        return {"form": None, "feasible": None, "val_accuracy": None}
    test_ci = s.test.ci95.get("accuracy", (None, None)) if s.test else (None, None)
    return {
        "form": s.form,
        "feasible": s.feasible,
        "val_accuracy": s.validation["accuracy"],
        "test_accuracy": s.test["accuracy"] if s.test else None,
        "test_ci_low": test_ci[0],
        "test_ci_high": test_ci[1],
        "test_macro_f1": s.test.metrics.get("macro_f1") if s.test else None,
        "latency_ms": s.latency.median_ms,
        "latency_p90_ms": s.latency.p90_ms,
        "speedup_vs_teacher": s.speedup,
        "params_m": s.latency.params / 1e6,
        "gflops": s.latency.gflops,
        "size_mb": s.size_mb,
        "layers": s.layers or None,
        "intermediate_size": s.intermediate_size or None,
        "groups": s.groups or None,
        "path": s.path,
    }


def build(sources: list[Path], out: Path) -> Path:
    """Write the report for `sources` into `out` (replaced whole, only when everything was written)."""
    frames, teachers = [], {}
    for s in sources:
        df, teacher = load_points(Path(s))
        frames.append(df)
        teachers[Path(s).name] = teacher
    points = pd.concat(frames, ignore_index=True)
    scored = points[(points["state"] == "COMPLETE") & points["val_accuracy"].notna()] if "val_accuracy" in points else points.iloc[:0]
    if scored.empty:
        raise CompressError(f"{', '.join(map(str, sources))}: no finished trial to report yet; run compress search (or --resume) first")
    teacher = next(iter(teachers.values()))
    front = pareto(points)
    summary = _summary(points, front, teacher, teachers)
    floor = _floor(sources[0], teacher)
    with atomic_dir(out) as tmp:
        points.to_csv(tmp / "trials.csv", index=False)
        render_png(points, front, teacher, tmp / "pareto.png", floor)
        (tmp / "report.md").write_text(render_markdown(points, front, teacher, summary, out.name))
        (tmp / "index.html").write_text(render_html(points, front, teacher, summary, out.name, floor))
        (tmp / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if not k.startswith("_")}, indent=2))
    return out


def _floor(source: Path, teacher: TeacherReference) -> float | None:
    """The study's accuracy constraint as a line on the plots (None without one)."""
    info = Path(source) / "search.json"
    drop = json.loads(info.read_text()).get("search", {}).get("max_accuracy_drop") if info.is_file() else None
    return None if drop is None else teacher.validation["accuracy"] - drop


def _summary(points: pd.DataFrame, front: pd.DataFrame, teacher: TeacherReference, teachers: dict[str, TeacherReference]) -> dict[str, Any]:
    tv, tt = teacher.validation["accuracy"], teacher.test["accuracy"] if teacher.test else None
    pick, why = knee(front, tv)
    within = front[front["test_accuracy"] >= tt - 0.01] if tt is not None else front.iloc[:0]
    levels = budgets(front)
    return {
        "teacher": teacher.model_dump(mode="json"),
        "trials": points.groupby("state").size().to_dict(),
        "front_size": len(front),
        "hypervolume": hypervolume(front, tv) if len(front) else 0.0,
        "hypervolume_by_source": {s: hypervolume(pareto(points[points["source"] == s]), t.validation["accuracy"]) for s, t in teachers.items()},
        "knee": None if pick is None else {"source": pick.source, "trial": int(pick.trial), "why": why},
        "best_speedup_within_1pt_test": float(within["speedup_vs_teacher"].max()) if not within.empty else None,
        "budgets": [{k: v for k, v in b.items() if k != "row"} for b in levels],
        "_knee_row": pick,
        "_budget_rows": levels,
    }
