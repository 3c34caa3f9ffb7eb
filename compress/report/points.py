"""A report's points: every proxy trial, final student, baseline and teacher form as one row of a DataFrame.

Points are read from typed records (`TrialScore`s in the study, `Frontier` of `compress finalize`, `RunMetrics`
of a plain run); everything a report shows is derived from this frame. Proxy trials stand at their *predicted*
speed-up (what the search optimized); finals, baselines and teacher forms at the speed-up *measured* in one
timing run against the teacher's fastest deploy form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from compress.core.arch import Architecture
from compress.core.errors import CompressError
from compress.core.frontier import Frontier, FrontierEntry, TeacherReference, TrialScore
from compress.core.records import FormEval, read_metrics
from compress.study.info import StudyInfo, is_study, read_info


@dataclass(frozen=True)
class Context:
    """What a source's rows are relative to: its teacher, its final timing run, its study record (None for a run)."""

    teacher: TeacherReference
    frontier: Frontier | None
    info: StudyInfo | None
    source: Path


def load_points(source: Path, storage: str | None = None) -> tuple[pd.DataFrame, Context]:
    """Every point of a study folder (search.json) or a run folder (metrics.json), and the study's context."""
    source = Path(source)
    if is_study(source):
        return _study_points(source, storage)
    if (source / "metrics.json").is_file():
        return _run_points(source)
    raise CompressError(
        f"{source}: neither a study folder (search.json) nor a run folder (metrics.json); "
        "pass results/<study> or results/<run>"
    )


def _study_points(source: Path, storage: str | None) -> tuple[pd.DataFrame, Context]:
    info = read_info(source)
    study = info.open(storage)
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
    if frontier:
        rows += [r for e in frontier.entries for r in _entry_rows(source.name, info.teacher.metric, e)]
    else:
        rows += _teacher_rows(source.name, info.teacher)
    return pd.DataFrame(rows), Context(info.teacher, frontier, info, source)


def _run_points(source: Path) -> tuple[pd.DataFrame, Context]:
    m = read_metrics(source / "metrics.json")
    forms = m.forms_of("teacher")
    if m.status != "complete" or not any(f.latency and "validation" in f.splits for f in forms.values()):
        raise CompressError(
            f"{source}: run is not complete or did not evaluate and time the teacher; rerun it, or report a study "
            "folder"
        )
    rows = [
        _form_row(
            source.name,
            m.metric,
            "teacher" if ev.model == "teacher" else "student",
            ev,
            None if ev.model == "teacher" else ev.form,
        )
        for ev in m.evaluations.values()
        if ev.latency and ev.splits
    ]
    return pd.DataFrame(rows), Context(TeacherReference(forms=forms, metric=m.metric), None, None, source)


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


def _arch_cols(a: Architecture) -> dict[str, Any]:
    return {
        "layers": len(a.heads),
        "hidden": a.hidden,  # residual width (below the teacher's: a narrowed student)
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
    """A final student or baseline in its fastest form; the teacher in every form (what a user gets without
    compress)."""
    forms = list(e.forms.values()) if e.kind == "teacher" else [e.best()]
    rows = [
        _form_row(source, metric, e.kind, f, e.name if e.kind != "teacher" else None, e.trial, e.arch, e.path)
        for f in forms
    ]
    if e.kind != "teacher":  # at natural lengths another form may be the fastest (measured: OpenVINO int8 leads at
        rows = [r | _natural_cols(e) for r in rows]  # seq 128, ONNX Runtime int8 at ~30 tokens)
    return [r | {"challenges": ", ".join(e.challenges) or None, "entry": e.name} for r in rows]


def _natural_cols(e: FrontierEntry) -> dict[str, Any]:
    """The natural-length columns of `e`'s fastest form at natural lengths (its lowest mean), named."""
    timed = [f for f in e.forms.values() if f.natural]
    if not timed:
        return {}
    best = min(timed, key=lambda f: f.natural.mean_ms if f.natural else float("inf"))
    assert best.natural is not None
    return {"natural_ms": best.natural.mean_ms, "natural_speedup": best.natural.speedup, "natural_form": best.form}


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
    arch: Architecture | None = None,
    path: str | None = None,
) -> dict[str, Any]:
    lat, nat = ev.latency, ev.natural
    assert lat is not None
    # the teacher in PyTorch fp32: a secondary ratio
    torch_key = next((k for k in lat.speedups if k.split("/")[-1] == "teacher"), None)
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
        "natural_form": ev.form if nat else None,
        "speedup_vs_torch": lat.speedups.get(torch_key) if torch_key else None,
        "params_m": lat.params / 1e6,
        **(_arch_cols(arch) if arch else {}),
        "path": _shown(path),
    }


def _shown(path: str | None) -> str | None:
    """A run folder relative to the working directory when inside it: committed reports name no machine's paths."""
    p = Path(path).resolve() if path else None
    return str(p.relative_to(Path.cwd())) if p and p.is_relative_to(Path.cwd()) else path
