"""`compress report`: what a study found, against what a user gets without compress.

    reports/<name>/index.html   interactive chart (plotly, embedded: works offline) and tables
    reports/<name>/report.md    the same for git, with pareto.png
    reports/<name>/trials.csv   every proxy trial, final student, baseline and teacher form (pandas)
    reports/<name>/summary.json the numbers: baselines (teacher forms, peers), final students, predictor quality

Points are read from typed records (`TrialScore`s in the study, `Frontier` of `compress finalize`, `RunMetrics`
of a plain run) into one DataFrame; everything shown is derived from it. Proxy trials stand at their *predicted*
speed-up (what the search optimized); finals, baselines and teacher forms at the speed-up *measured* in one
timing run against the teacher's fastest deploy form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from pydantic import ValidationError

from compress.core.atomic import atomic_dir
from compress.core.errors import CompressError, first_line
from compress.core.records import FormEval, Frontier, FrontierEntry, TeacherReference, TrialScore, read_metrics
from compress.deploy.blocks import Architecture
from compress.deploy.latency_model import agreement
from compress.search.frontier import budgets, hypervolume, knee, pareto
from compress.search.paired import closest
from compress.search.plots import render_png, render_predictor_png
from compress.search.render import render_html, render_markdown
from compress.search.storage import reopen


def load_points(source: Path, storage: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every point of a study folder (search.json) or a run folder (metrics.json), and the study's context."""
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
            study = optuna.load_study(study_name=info["study"], storage=reopen(info["storage"], storage))
        except CompressError:
            raise
        except Exception as e:
            raise CompressError(f"{source}: cannot open study {info['study']!r} in {info['storage']} ({first_line(e)})") from None
        frontier = _frontier(source)
        retimed = {t.trial: t.speedup for t in frontier.trials} if frontier else {}
        rows = [
            {
                "source": source.name,
                "kind": "trial",
                "name": f"{source.name}#{t.number}",
                "trial": t.number,
                "state": t.state.name,
                **_trial_row(TrialScore.model_validate(t.user_attrs["score"]) if "score" in t.user_attrs else None),
                "config": json.dumps(t.user_attrs.get("config", {}), sort_keys=True),
                "error": t.user_attrs.get("error"),
                "pruned_by": t.user_attrs.get("pruned_by"),
                "retimed_speedup": retimed.get(t.number),
            }
            for t in study.trials
        ]
        rows += (
            [r for e in frontier.entries for r in _entry_rows(source.name, teacher.metric, e)] if frontier else _teacher_rows(source.name, teacher)
        )
        return pd.DataFrame(rows), {"teacher": teacher, "frontier": frontier, "info": info, "source": source}
    if (source / "metrics.json").is_file():
        m = read_metrics(source / "metrics.json")
        forms = m.forms_of("teacher")
        if m.status != "complete" or not any(f.latency and "validation" in f.splits for f in forms.values()):
            raise CompressError(f"{source}: run is not complete or did not evaluate and time the teacher; rerun it, or report a study folder")
        teacher = TeacherReference(forms=forms, metric=m.metric)
        rows = [
            _form_row(source.name, m.metric, "teacher" if ev.model == "teacher" else "student", ev, None if ev.model == "teacher" else ev.form)
            for ev in m.evaluations.values()
            if ev.latency and ev.splits
        ]
        return pd.DataFrame(rows), {"teacher": teacher, "frontier": None, "info": {}, "source": source}
    raise CompressError(f"{source}: neither a study folder (search.json) nor a run folder (metrics.json); pass results/<study> or results/<run>")


def _frontier(source: Path) -> Frontier | None:
    path = source / "final" / "frontier.json"
    return Frontier.model_validate(json.loads(path.read_text())) if path.is_file() else None


def _scores(splits: dict[str, Any], metric: str) -> dict[str, Any]:
    val, test = splits.get("validation"), splits.get("test")
    lo, hi = test.ci95.get(metric, (None, None)) if test else (None, None)
    return {
        "val_score": val[metric] if val else None,
        "test_score": test[metric] if test else None,
        "test_ci_low": lo,
        "test_ci_high": hi,
    }


def _arch_cols(arch: dict[str, Any]) -> dict[str, Any]:
    a = Architecture.model_validate(arch)
    return {
        "layers": len(a.heads),
        "intermediate_size": a.ffn,
        "groups": ",".join(str(g) for g in a.groups.values()),
        "heads": a.heads[0] if a.heads else None,
    }


def _trial_row(s: TrialScore | None) -> dict[str, Any]:
    if s is None:
        return {"form": None, "feasible": None, "val_score": None}
    lat = s.latency
    return {
        "form": s.form,
        "feasible": s.feasible,
        **_scores({"validation": s.validation, "test": s.test}, s.metric),
        "speedup": s.predicted_speedup,
        "predicted_ms": s.predicted_ms,
        "latency_ms": lat.p10_ms if lat else None,
        "median_ms": lat.median_ms if lat else None,
        "measured_speedup": lat.speedup if lat else None,
        "measured_threads": lat.threads if lat else None,
        "size_mb": s.size_mb,
        "params_m": lat.params / 1e6 if lat else None,
        **_arch_cols(s.arch),
        "path": _shown(s.path),
    }


def _entry_rows(source: str, metric: str, e: FrontierEntry) -> list[dict[str, Any]]:
    """A final student or baseline in its fastest form; the teacher in every form (what a user gets without compress)."""
    forms = list(e.forms.values()) if e.kind == "teacher" else [e.best()]
    rows = [_form_row(source, metric, e.kind, f, e.name if e.kind != "teacher" else None, e.trial, e.arch, e.path) for f in forms]
    return [r | {"challenges": ", ".join(e.challenges) or None, "entry": e.name} for r in rows]


def _teacher_rows(source: str, teacher: TeacherReference) -> list[dict[str, Any]]:
    """The teacher's forms from the study's reference run (before `compress finalize` times everything together)."""
    return [_form_row(source, teacher.metric, "teacher", ev) for ev in teacher.forms.values() if ev.latency]


def _form_row(
    source: str,
    metric: str,
    kind: str,
    ev: FormEval,
    name: str | None = None,
    trial: int | None = None,
    arch: dict[str, Any] | None = None,
    path: str | None = None,
) -> dict[str, Any]:
    lat, nat = ev.latency, ev.natural
    assert lat is not None
    torch_key = next((k for k in lat.speedups if k.split("/")[-1] == "teacher"), None)  # the teacher in PyTorch fp32: a secondary ratio
    return {
        "source": source,
        "kind": kind,
        "name": name or f"teacher ({ev.runtime} {ev.precision})",
        "trial": trial,
        "state": "COMPLETE",
        "form": ev.form,
        "feasible": True,
        **_scores(ev.splits, metric),
        "speedup": lat.speedup,
        "latency_ms": lat.p10_ms,
        "median_ms": lat.median_ms,
        "natural_ms": nat.mean_ms if nat else None,
        "natural_speedup": nat.speedup if nat else None,
        "speedup_vs_torch": lat.speedups.get(torch_key) if torch_key else None,
        "params_m": lat.params / 1e6,
        **(_arch_cols(arch) if arch else {}),
        "path": _shown(path),
    }


def _shown(path: str | None) -> str | None:
    """A run folder relative to the working directory when inside it: committed reports name no machine's paths."""
    p = Path(path).resolve() if path else None
    return str(p.relative_to(Path.cwd())) if p and p.is_relative_to(Path.cwd()) else path


def predictor_quality(points: pd.DataFrame) -> dict[str, Any]:
    """How well the predicted speed-up ranks and matches the measured one: over the trials re-timed together after the
    search (finalize.check_trials, `measured` "re-timed") when there are two or more, else as measured in each trial's
    own run (`measured` "own run"); the latter is kept under `own_runs` either way."""

    def over(column: str) -> dict[str, Any]:
        t = points[(points["kind"] == "trial") & points[column].notna()] if column in points else pd.DataFrame()
        if len(t) < 2:
            return {"trials": len(t), "spearman": None, "median_abs_err": None}
        rho, err = agreement(t["speedup"].tolist(), t[column].tolist())
        return {"trials": len(t), "spearman": rho, "median_abs_err": err}

    own, retimed = over("measured_speedup"), over("retimed_speedup")
    return (retimed | {"measured": "re-timed"} if retimed["trials"] >= 2 else own | {"measured": "own run"}) | {"own_runs": own}


def build(sources: list[Path], out: Path, storage: str | None = None) -> Path:
    """Write the report for `sources` into `out` (replaced whole, only when everything was written).
    `storage` replaces the URL recorded in a study's search.json (one recorded without its password)."""
    loaded = [load_points(Path(s), storage) for s in sources]
    points = pd.concat([df for df, _ in loaded], ignore_index=True)
    context = loaded[0][1]
    scored = (
        points[(points["state"] == "COMPLETE") & points["val_score"].notna() & (points["kind"] != "teacher")]
        if "val_score" in points
        else points.iloc[:0]
    )
    if scored.empty:
        raise CompressError(f"{', '.join(map(str, sources))}: no finished trial to report yet; run compress search (or --resume) first")
    trials = points[points["kind"].isin(["trial", "student"])]
    front = pareto(trials)
    summary = _summary(points, front, context, {s: c["teacher"] for s, (_, c) in zip([Path(x).name for x in sources], loaded, strict=True)})
    floor = _floor(context)
    with atomic_dir(out) as tmp:
        points.to_csv(tmp / "trials.csv", index=False)
        render_png(points, front, summary, tmp / "pareto.png", floor)
        summary["_predictor_png"] = render_predictor_png(points, summary, tmp / "predictor.png")
        (tmp / "report.md").write_text(render_markdown(points, front, summary, out.name))
        (tmp / "index.html").write_text(render_html(points, front, summary, out.name, floor))
        (tmp / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if not k.startswith("_")}, indent=2, default=str))
    return out


def _floor(context: dict[str, Any]) -> float | None:
    """The study's accuracy constraint (on validation) as a line on the plots (None without one)."""
    drop = context["info"].get("search", {}).get("max_accuracy_drop")
    val = context["teacher"].score("validation")
    return None if drop is None or val is None else val - drop


def _row_summary(r: pd.Series) -> dict[str, Any]:
    scores = ["test_score", "test_ci_low", "test_ci_high", "val_score"]
    speed = ["latency_ms", "median_ms", "natural_ms", "speedup", "natural_speedup", "speedup_vs_torch"]
    keys = ["name", "form", *scores, *speed, "layers", "groups", "intermediate_size", "trial", "challenges", "path"]
    out = {k: (None if pd.isna(r[k]) else r[k].item() if hasattr(r[k], "item") else r[k]) for k in keys if k in r}
    return out | {k: int(v) for k in ("layers", "intermediate_size", "trial") if (v := out.get(k)) is not None}  # counts, not floats


def _summary(points: pd.DataFrame, front: pd.DataFrame, context: dict[str, Any], teachers: dict[str, TeacherReference]) -> dict[str, Any]:
    teacher: TeacherReference = context["teacher"]
    tv, tt = teacher.score("validation"), teacher.score("test")
    pick, why = knee(front, tv) if tv is not None else (None, "no teacher validation accuracy")
    kind = points["kind"]
    finals, peers, forms = points[kind == "final"], points[kind == "baseline"], points[kind == "teacher"]
    within = finals[finals["test_score"] >= tt - 0.01] if tt is not None and not finals.empty else finals.iloc[:0]
    rivals = pd.concat([forms, peers])  # what users get without compress (the teacher's forms), then peer students
    dominated = [
        bool(((finals["test_score"] >= r.test_score) & (finals["speedup"] >= r.speedup)).any()) if not finals.empty else False
        for r in rivals.itertuples()
    ]
    levels = budgets(front)
    frontier: Frontier | None = context["frontier"]
    near = closest(frontier) if frontier else {}  # keyed "<frontier entry>/<form>", as the rows' entry and form
    paired = [near.get(f"{e}/{f}") for e, f in zip(rivals["entry"], rivals["form"], strict=True)] if near else [None] * len(rivals)
    return {
        "target": context["info"].get("target"),
        "reference": frontier.reference if frontier else f"teacher/{teacher.fastest().form}",
        "timing": None
        if frontier is None
        else {
            "seq": frontier.seq,
            "threads": frontier.threads,
            "runs": frontier.runs,
            "repeats": frontier.repeats,
            "statistic": "p10 of per-call times",
            "repeats_redone": frontier.repeats_redone,
        },
        "metric": teacher.metric,  # what every score column holds (task.metric)
        "teacher_score": {"validation": tv, "test": tt},
        "baselines": [
            _row_summary(r) | {"kind": "teacher" if r["kind"] == "teacher" else "peer", "dominated": d, "paired": c}
            for (_, r), d, c in zip(rivals.iterrows(), dominated, paired, strict=True)
        ],
        "finals": [_row_summary(r) for _, r in finals.sort_values("speedup", ascending=False).iterrows()],
        "best_speedup_vs_teacher_fastest_within_1pt": float(within["speedup"].max()) if not within.empty else None,
        "baselines_total": len(rivals),
        "baselines_dominated": int(sum(dominated)),
        # as fast, and not surely less accurate: the paired 95% interval of the difference reaches 0
        "baselines_matched_paired": sum(c is not None and c["ci95"][1] >= 0 for c in paired),
        "predictor": predictor_quality(points),
        "trials": points[kind == "trial"].groupby("state").size().to_dict(),
        "front_size": len(front),
        "hypervolume": hypervolume(front, tv) if len(front) and tv is not None else 0.0,
        "hypervolume_by_source": {
            s: hypervolume(pareto(points[(points["source"] == s) & (kind == "trial")]), t.score("validation") or 0.0) for s, t in teachers.items()
        },
        "knee": None if pick is None else {"name": pick["name"], "why": why},
        "budgets": [{k: v for k, v in b.items() if k != "row"} for b in levels],
        "_knee_row": pick,
        "_budget_rows": levels,
    }
