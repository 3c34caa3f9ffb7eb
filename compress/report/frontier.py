"""The accuracy/latency frontier of scored points: Pareto front, hypervolume, knee, best per speed level.

Points are rows of the report's DataFrame with `val_score` and `speedup` (a ratio measured
in one timing run, so points timed at different moments of a noisy machine stay comparable). The front is
chosen on validation accuracy; test accuracy is only reported.
"""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd

from compress.core.records import ONE_POINT

HV_ACCURACY_FLOOR = 0.10  # hypervolume reference: 10 pt below the teacher, at the teacher's latency
SPEEDUP_LEVELS = (1.5, 2, 3, 4)  # x the teacher's fastest deploy form


def pareto(points: pd.DataFrame) -> pd.DataFrame:
    """Feasible scored points on the (max validation accuracy, min relative latency) front, fastest first."""
    ok = points[
        (points["state"] == "COMPLETE") & (points["feasible"].fillna(False).astype(bool)) & points["val_score"].notna()
    ]
    if ok.empty:
        return ok
    # Optuna decides the front: the points become trials of an in-memory two-objective study.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    labels = [int(i) for i in ok.index.to_numpy()]
    dist = optuna.distributions.IntDistribution(0, max(max(labels), 1))  # the row label rides along as a parameter
    acc, speed = ok["val_score"].to_numpy(dtype=float), ok["speedup"].to_numpy(dtype=float)
    study.add_trials(
        [
            optuna.trial.create_trial(values=[a, 1 / x], params={"row": i}, distributions={"row": dist})
            for i, a, x in zip(labels, acc, speed, strict=True)
        ]
    )
    rows = sorted({t.params["row"] for t in study.best_trials})
    return points.loc[rows].sort_values("speedup", ascending=False)


def hypervolume_2d(points: np.ndarray, ref: np.ndarray) -> float:
    """Area dominated by `points` (both coordinates minimized) up to `ref`.

    Optuna has no public hypervolume (only `optuna._hypervolume`); in two dimensions it is a sum of
    rectangles over the points sorted by the first coordinate."""
    pts = points[(points < ref).all(axis=1)]
    area, best_y = 0.0, ref[1]
    for x, y in pts[np.argsort(pts[:, 0])]:
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return float(area)


def hypervolume(front: pd.DataFrame, teacher_val: float) -> float:
    """Area dominated by the front in (validation accuracy, latency / teacher latency), reference point
    (teacher - 10 pt, 1.0)."""
    ref = np.array([-(teacher_val - HV_ACCURACY_FLOOR), 1.0])
    pts = np.stack([-front["val_score"].to_numpy(dtype=float), 1 / front["speedup"].to_numpy(dtype=float)], axis=1)
    return hypervolume_2d(pts, ref)


def knee(front: pd.DataFrame, teacher_val: float) -> tuple[pd.Series | None, str]:
    """The recommended student, and why."""
    if front.empty:
        return None, "no feasible finished trial"
    if len(front) >= 3:
        x, y = np.log(front["speedup"].to_numpy()), front["val_score"].to_numpy()
        xn, yn = (x - x.min()) / (np.ptp(x) or 1), (y - y.min()) / (np.ptp(y) or 1)
        # front sorted fastest first: the chord runs from the fastest (1, 0) to the most accurate (0, 1);
        # the distance is positive on the side of the ideal corner (fast and accurate)
        dist = (xn + yn - 1) / np.sqrt(2)
        i = int(np.argmax(dist))
        if dist[i] > 0:
            return front.iloc[i], (
                "the knee of the front: farthest above the straight line from the fastest to the most accurate "
                "student (log speedup vs accuracy) - past it, more speed costs accuracy faster"
            )
    close = front[front["val_score"] >= teacher_val - ONE_POINT]
    if not close.empty:
        return close.iloc[0], "the fastest student within 1 pt of the teacher's validation accuracy"
    return front.sort_values("val_score").iloc[-1], "the most accurate student (none is within 1 pt of the teacher)"


def budgets(front: pd.DataFrame) -> list[tuple[float, pd.Series | None]]:
    """(speed level, the most accurate feasible student at least that fast, by validation score) per level."""
    out = []
    for level in SPEEDUP_LEVELS:
        fast = front[front["speedup"] >= level]
        out.append((level, fast.sort_values("val_score").iloc[-1] if not fast.empty else None))
    return out
