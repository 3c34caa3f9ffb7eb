"""`compress report`: the accuracy/latency frontier of one or more studies (or plain runs).

    reports/<name>/index.html   interactive scatter (plotly, embedded: works offline), Pareto front, tables
    reports/<name>/report.md    the same tables for git, with pareto.png
    reports/<name>/trials.csv   every trial and metric (pandas)

The front is chosen on *validation* accuracy (what the search optimized) and reported with *test*
accuracy, so the test split never influences which students are shown.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from compress.errors import CompressError
from compress.io import atomic_dir

HV_ACCURACY_FLOOR = 0.10  # hypervolume reference: 10 pt below the teacher, at the teacher's latency
SPEEDUP_LEVELS = (2, 4, 6, 8)


def load_points(source: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """All scored points of a study folder (search.json) or a run folder (metrics.json), and its teacher."""
    source = Path(source)
    if (source / "search.json").is_file():
        info = json.loads((source / "search.json").read_text())
        try:
            study = optuna.load_study(study_name=info["study"], storage=info["storage"])
        except Exception as e:  # noqa: BLE001 - storage errors come in many driver types
            raise CompressError(f"{source}: cannot open study {info['study']!r} in {info['storage']} ({str(e).splitlines()[0]})") from None
        rows = []
        for t in study.trials:
            a = t.user_attrs
            rows.append({"source": source.name, "trial": t.number, "state": t.state.name, "form": a.get("form"), **_metrics(a),
                         "config": json.dumps(a.get("config", {}), sort_keys=True), "error": a.get("error"), "pruned_by": a.get("pruned_by")})
        return pd.DataFrame(rows), info["teacher"]
    if (source / "metrics.json").is_file():
        m = json.loads((source / "metrics.json").read_text())
        ev = m.get("metrics", {}).get("evaluate", {})
        if m.get("status") != "complete" or "teacher" not in ev:
            raise CompressError(f"{source}: run is not complete or did not evaluate the teacher; rerun it, or report a study folder")
        t = ev["teacher"]
        teacher = {"validation": t.get("validation"), "test": t.get("test"), "latency_ms": t.get("latency", {}).get("median_ms")}
        rows = [{"source": source.name, "trial": i, "state": "COMPLETE", "form": k, **_metrics(_from_eval(v)), "config": k}
                for i, (k, v) in enumerate(ev.items()) if k != "teacher" and "latency" in v and "validation" in v]
        return pd.DataFrame(rows), teacher
    raise CompressError(f"{source}: neither a study folder (search.json) nor a run folder (metrics.json); pass results/<study> or results/<run>")


def _from_eval(v: dict) -> dict:
    lat = v["latency"]
    return {"val_accuracy": v["validation"]["accuracy"], "test_accuracy": v.get("test", {}).get("accuracy"),
            "test_ci95": v.get("test", {}).get("accuracy_ci95"), "latency_ms": lat["median_ms"], "latency_p90_ms": lat["p90_ms"],
            "speedup_vs_teacher": lat.get("speedup_vs_teacher"), "params": lat["params"], "gflops": lat["gflops"], "feasible": True}


def _metrics(a: dict) -> dict:
    ci = a.get("test_ci95") or [None, None]
    groups = a.get("groups")
    return {"feasible": a.get("feasible"), "val_accuracy": a.get("val_accuracy"), "test_accuracy": a.get("test_accuracy"),
            "test_ci_low": ci[0], "test_ci_high": ci[1], "test_macro_f1": a.get("test_macro_f1"), "latency_ms": a.get("latency_ms"),
            "latency_p90_ms": a.get("latency_p90_ms"), "speedup_vs_teacher": a.get("speedup_vs_teacher"), "params_m": (a.get("params") or 0) / 1e6 or None,
            "gflops": a.get("gflops"), "size_mb": a.get("size_mb"), "layers": a.get("layers"), "intermediate_size": a.get("intermediate_size"),
            "groups": ",".join(str(groups[k]) for k in groups) if isinstance(groups, dict) else groups, "path": a.get("path")}


def pareto(points: pd.DataFrame) -> pd.DataFrame:
    """Feasible scored points on the (max validation accuracy, min relative latency) front, fastest first."""
    ok = points[(points["state"] == "COMPLETE") & (points["feasible"].fillna(False).astype(bool)) & points["val_accuracy"].notna()]
    if ok.empty:
        return ok
    # Optuna decides the front: the points become trials of an in-memory two-objective study.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = optuna.distributions.IntDistribution(0, max(int(ok.index.max()), 1))  # the row label rides along as a parameter
    study.add_trials([optuna.trial.create_trial(values=[r.val_accuracy, 1 / r.speedup_vs_teacher], params={"row": int(i)},
                                                distributions={"row": dist}) for i, r in ok.iterrows()])
    rows = sorted({t.params["row"] for t in study.best_trials})
    return points.loc[rows].sort_values("speedup_vs_teacher", ascending=False)


def hypervolume(front: pd.DataFrame, teacher_val: float) -> float:
    """Area dominated by the front in (validation accuracy, latency / teacher latency), reference point
    (teacher - 10 pt, 1.0). Relative latency is measured in the same interleaved run as its teacher, so
    trials timed at different moments of a noisy machine stay comparable."""
    from optuna._hypervolume import compute_hypervolume  # no public function yet; the same code optuna's samplers use

    ref = np.array([-(teacher_val - HV_ACCURACY_FLOOR), 1.0])
    pts = np.array([[-r.val_accuracy, 1 / r.speedup_vs_teacher] for r in front.itertuples()]).reshape(-1, 2)
    pts = pts[(pts < ref).all(axis=1)]
    return float(compute_hypervolume(pts, ref)) if len(pts) else 0.0


def knee(front: pd.DataFrame, teacher_val: float) -> tuple[pd.Series | None, str]:
    """The recommended student, and why."""
    if front.empty:
        return None, "no feasible finished trial"
    if len(front) >= 3:
        x, y = np.log(front["speedup_vs_teacher"].to_numpy()), front["val_accuracy"].to_numpy()
        xn, yn = (x - x.min()) / (np.ptp(x) or 1), (y - y.min()) / (np.ptp(y) or 1)
        # front sorted fastest first: the chord runs from the fastest (1, 0) to the most accurate (0, 1);
        # the distance is positive on the side of the ideal corner (fast and accurate)
        dist = (xn + yn - 1) / np.sqrt(2)
        i = int(np.argmax(dist))
        if dist[i] > 0:
            return front.iloc[i], ("the knee of the front: farthest above the straight line from the fastest to the most accurate "
                                   "student (log speedup vs accuracy) - past it, more speed costs accuracy faster")
    close = front[front["val_accuracy"] >= teacher_val - 0.01]
    if not close.empty:
        return close.iloc[0], "the fastest student within 1 pt of the teacher's validation accuracy"
    return front.sort_values("val_accuracy").iloc[-1], "the most accurate student (none is within 1 pt of the teacher)"


def budgets(points: pd.DataFrame, front: pd.DataFrame) -> list[dict]:
    """The most accurate (validation) feasible student at each speed level."""
    out = []
    for level in SPEEDUP_LEVELS:
        fast = front[front["speedup_vs_teacher"] >= level]
        best = fast.sort_values("val_accuracy").iloc[-1] if not fast.empty else None
        out.append({"speedup_at_least": level, "trial": None if best is None else f"{best.source}#{best.trial}", "row": best})
    return out


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
    from compress.report_render import render_html, render_markdown, render_png

    floor = _floor(sources[0], teacher)
    with atomic_dir(out) as tmp:
        points.to_csv(tmp / "trials.csv", index=False)
        render_png(points, front, teacher, tmp / "pareto.png", floor)
        (tmp / "report.md").write_text(render_markdown(points, front, teacher, summary, out.name))
        (tmp / "index.html").write_text(render_html(points, front, teacher, summary, out.name, floor))
        (tmp / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2))
    return out


def _floor(source: Path, teacher: dict) -> float | None:
    """The study's accuracy constraint as a line on the plots (None without one)."""
    info = Path(source) / "search.json"
    drop = json.loads(info.read_text()).get("search", {}).get("max_accuracy_drop") if info.is_file() else None
    return None if drop is None else teacher["validation"]["accuracy"] - drop


def _summary(points: pd.DataFrame, front: pd.DataFrame, teacher: dict, teachers: dict) -> dict:
    tv, tt = teacher["validation"]["accuracy"], (teacher.get("test") or {}).get("accuracy")
    pick, why = knee(front, tv)
    within = front[front["test_accuracy"] >= tt - 0.01] if tt is not None else front.iloc[:0]
    counts = points.groupby("state").size().to_dict()
    levels = budgets(points, front)
    return {
        "teacher": teacher, "trials": counts, "front_size": len(front), "hypervolume": hypervolume(front, tv) if len(front) else 0.0,
        "hypervolume_by_source": {s: hypervolume(pareto(points[points["source"] == s]), teachers[s]["validation"]["accuracy"]) for s in teachers},
        "knee": None if pick is None else {"source": pick.source, "trial": int(pick.trial), "why": why},
        "best_speedup_within_1pt_test": float(within["speedup_vs_teacher"].max()) if not within.empty else None,
        "budgets": [{k: v for k, v in b.items() if k != "row"} for b in levels],
        "_knee_row": pick, "_budget_rows": levels,
    }


def _jsonable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def fmt_ci(row: Any) -> str:
    """Test accuracy with its interval, for a row (Series or itertuples record)."""
    acc, lo, hi = (getattr(row, k, None) for k in ("test_accuracy", "test_ci_low", "test_ci_high"))
    if acc is None or pd.isna(acc):
        return "-"
    return f"{acc:.4f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and not pd.isna(lo) else "")


def escape(text: Any) -> str:
    return html.escape(str(text))
