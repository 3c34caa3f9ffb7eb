"""Paired test comparisons of the final timing run: each final student against each rival.

A rival is what a final student should beat: every deploy form of the teacher and each peer baseline's fastest
form. Two models tested on the same 2,000 texts share most of their errors, so the interval of their
*difference*, from bootstrap draws of the same texts for both, is far narrower than either model's own; it is
what says whether a 0.5 pt gap is real (separate intervals that overlap do not).

The compared predictions come from the timed artifacts on disk (a student's or baseline's fastest form, each
form of the teacher), so the scores compared are those of what was timed; each is checked against the test
score its run recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from compress.core.frontier import Frontier, FrontierEntry, PairedDiff
from compress.core.records import Record
from compress.data.sources import load_task
from compress.data.splits import encode_split
from compress.deploy.forms import forms_on_disk
from compress.modeling.loading import load_tokenizer
from compress.modeling.runners import predict_with
from compress.recipe import Recipe
from compress.tasks.metrics import paired_ci, resampled

log = logging.getLogger(__name__)


def _compared(e: FrontierEntry) -> list[str]:
    """The forms of an entry that take part: every form of the teacher (each is a rival), a student's fastest."""
    return list(e.forms) if e.kind == "teacher" else [e.best().form]


def compare(recipe: Recipe, frontier: Frontier, seed: int = 0) -> Frontier:
    """`frontier` with every final student's `paired` differences to every rival on the test split."""
    task = load_task(recipe.task, recipe.seed)
    teacher = next(e for e in frontier.entries if e.kind == "teacher")
    split = encode_split(
        task, recipe.task, load_tokenizer(str(Path(teacher.path) / "models" / "teacher")), "test", recipe.cache_path()
    )
    scored: dict[str, tuple[float, np.ndarray]] = {}  # "<entry>/<form>" -> its score over all units and over each draw
    n = 0  # test units (examples, sentences, questions): the same for every model
    for e in frontier.entries:
        wanted = [f for f in _compared(e) if "test" in e.forms[f].splits]
        runners = forms_on_disk(Path(e.path), e.forms[wanted[0]].model, recipe.threads) if wanted else {}
        for form in wanted:
            ev, runner = runners[form]
            n, fn = task.kind.resampler(task.metric, predict_with(runner, split), split, task.labels)
            scored[f"{e.name}/{form}"] = resampled(n, fn, seed=seed)  # the same draws for every model
            now, recorded = scored[f"{e.name}/{form}"][0], ev.splits["test"][task.metric]
            if abs(now - recorded) > 1e-6:  # a changed split or artifact: what is on disk now is compared
                log.warning(
                    "%s/%s scores %s %.4f on the test split now, %.4f in its run",
                    e.name,
                    form,
                    task.metric,
                    now,
                    recorded,
                )
    rivals = [
        k for e in frontier.entries if e.kind != "final" for f in _compared(e) if (k := f"{e.name}/{f}") in scored
    ]
    entries = []
    for e in frontier.entries:
        mine = f"{e.name}/{e.best().form}"
        if e.kind != "final" or mine not in scored:
            entries.append(e)
            continue
        diffs = []
        for r in rivals:
            d, lo, hi = paired_ci(scored[mine], scored[r])
            diffs.append(PairedDiff(rival=r, form=e.best().form, metric=task.metric, diff=d, ci95=(lo, hi), n=n))
        entries.append(e.model_copy(update={"paired": diffs}))
    return frontier.model_copy(update={"entries": entries})


class Closest(Record):
    """A rival's closest final student: the most accurate one at least as fast, and their paired test difference."""

    student: str
    diff: float  # student minus rival
    ci95: tuple[float, float]
    n: int


def closest(frontier: Frontier) -> dict[str, Closest]:
    """For each rival ("<name>/<form>"): the most accurate final student at least as fast as it, and their paired
    difference (student minus rival). Rivals no final student is as fast as are left out."""
    finals = [e for e in frontier.entries if e.kind == "final" and e.paired]
    out = {}
    for r in (e for e in frontier.entries if e.kind != "final"):
        for form in _compared(r):
            lat = r.forms[form].latency
            key = f"{r.name}/{form}"
            fast = [e for e in finals if lat and (s := e.best().latency) and (s.speedup or 0) >= (lat.speedup or 0)]
            pairs = [(e, p) for e in fast for p in e.paired if p.rival == key]
            if pairs:
                e, p = max(pairs, key=lambda t: t[1].diff)
                out[key] = Closest(student=e.name, diff=p.diff, ci95=p.ci95, n=p.n)
    return out
