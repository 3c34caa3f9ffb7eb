"""Which proxy students finalize retrains: distinct architectures spread along the front, and for each peer
baseline the challenger meant to beat it. Pure functions of the trials' scores (no training, no timing).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np

from compress.core.frontier import TrialScore

log = logging.getLogger(__name__)

Trials = list[tuple[int, TrialScore]]  # (trial number, its score)


def candidates(trials: Trials) -> Trials:
    """The trials finalize chooses from: the feasible ones, or every one when none is (brief proxies can all miss
    max_accuracy_drop, and full-budget retraining often recovers it; finalize says so)."""
    return [(n, s) for n, s in trials if s.feasible] or trials


def pick(trials: Trials, k: int, how: Literal["spread", "fastest"] = "spread") -> Trials:
    """Up to `k` distinct architectures of the feasible front (validation accuracy vs predicted latency): spread
    evenly along it from the fastest to the most accurate (one: its middle), or the `k` fastest (`how`)."""
    ok = candidates(trials)
    front = [(n, s) for n, s in ok if not any(_dominates(o, s) for _, o in ok)]
    distinct: dict[str, tuple[int, TrialScore]] = {}
    for n, s in sorted(front, key=lambda t: -t[1].value):
        distinct.setdefault(s.arch.model_dump_json(), (n, s))
    ordered = sorted(distinct.values(), key=lambda t: t[1].predicted_ms)
    return ordered[:k] if how == "fastest" else spread(ordered, k)


def spread(ordered: list[Any], k: int) -> list[Any]:
    """Up to `k` of `ordered`, evenly spaced from its first to its last (one: its middle)."""
    if len(ordered) <= k:
        return ordered
    at = [len(ordered) // 2] if k == 1 else np.round(np.linspace(0, len(ordered) - 1, k)).astype(int).tolist()
    return [ordered[i] for i in sorted(set(at))]


def challengers(trials: Trials, peers: dict[str, float], margin: float = 0.0) -> dict[str, tuple[int, TrialScore]]:
    """For each peer baseline (name -> its predicted latency): the candidate proxy student meant to beat it.

    Among the candidates predicted at least `margin` (relative) faster than the baseline, those whose validation
    score is within one standard error of the best one's (from its bootstrap interval) are tied, and the slowest of
    them is chosen. Why: at the top, brief proxies differ by noise (1,000 validation texts: about 1.4 pt), and a
    one-epoch proxy under-rates a larger student, which gains the most from full-budget training; so the
    challenger is the largest of the best students that is still surely no slower than the baseline (`margin`:
    the latency model's typical error). Baselines no student is fast enough for are left out."""
    out = {}
    for name, ms in peers.items():
        faster = [(n, s) for n, s in candidates(trials) if s.predicted_ms <= ms * (1 - margin)]
        if not faster:
            why = "no proxy student predicted %.0f%% faster; none retrained against it"
            log.info("baseline %s (predicted %.2f ms): " + why, name, ms, 100 * margin)
            continue
        best = max(faster, key=lambda t: t[1].value)[1]
        lo, hi = best.validation.ci95.get(best.metric, (best.value, best.value))
        tied = [(n, s) for n, s in faster if s.value >= best.value - (hi - lo) / 3.92]
        out[name] = max(tied, key=lambda t: (t[1].predicted_ms, t[1].value))
        n, s = out[name]
        log.info(
            "baseline %s (predicted %.2f ms): challenger trial %d (predicted %.2f ms, validation %.4f; "
            "%d tied with the best %.4f)",
            *(name, ms, n, s.predicted_ms, s.value, len(tied), best.value),
        )
    return out


def latency_error(trials: Trials) -> float:
    """The latency model's typical relative error between two architectures, over the trials timed in their own runs
    (0 with fewer than two): the median absolute deviation of log(predicted / measured speed-up) from its median.

    Speed-ups, not milliseconds: each trial's is against the teacher timed beside it, which cancels how fast this
    shared machine happened to be at that minute (seen: one student measured 5.46 ms for a predicted 3.26, its
    speed-up 1.36 for a predicted 1.97, while the typical trial was within 10%). The median ratio is a bias common
    to every architecture (seen: every trial's one timing series read students ~20% slower than the model, which
    predicted the repeated final timing run within ~4%), so to a student and the baseline it is compared with;
    only the spread around it can put a student on the wrong side of a baseline."""
    ratios = [s.predicted_speedup / s.measured_speedup for _, s in trials if s.measured_speedup]
    if len(ratios) < 2:
        return 0.0
    r = np.log(ratios)
    return float(np.expm1(np.median(np.abs(r - np.median(r)))))


def _dominates(a: TrialScore, b: TrialScore) -> bool:
    better_or_equal = a.value >= b.value and a.predicted_ms <= b.predicted_ms
    return better_or_equal and (a.value > b.value or a.predicted_ms < b.predicted_ms)
