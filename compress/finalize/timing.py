"""The final timing run: the teacher's forms, the final students and the baselines, timed together.

One process, one interleaved session repeated `finalize.repeats` times (a repeat slowed by machine load is
redone): every speed-up is the teacher's fastest form's p10 over a form's p10, both from this session,
so milliseconds and speed-ups can never disagree. Then batch 1 at the task's natural lengths.

Then the latency model's check (`time_trials`): proxy trials' students beside the teacher's forms, in a session
of their own timed the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch

from compress.core.arch import Architecture
from compress.core.frontier import Frontier, FrontierEntry, TrialTiming
from compress.core.records import FormEval, Latency, NaturalLatency, fastest
from compress.data.encoding import encode, single_batches
from compress.data.sources import TaskData, load_task
from compress.deploy.flops import flops_per_sequence
from compress.deploy.forms import forms_on_disk
from compress.deploy.latency import natural_lengths, repeated
from compress.deploy.latency_model import run_each
from compress.deploy.targets import get_target
from compress.finalize.front import Trials
from compress.modeling.loading import load_config, load_tokenizer
from compress.modeling.runners import Runner
from compress.recipe import Recipe
from compress.recipe.search import SearchSpec
from compress.study.latency import timing_inputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    name: str
    kind: Literal["teacher", "final", "baseline"]
    trial: int | None
    run: Path  # a finished run folder
    fresh: bool  # trained by this finalize (so earlier timings no longer describe it)
    model: str  # the model of that run whose forms are timed
    challenges: tuple[str, ...] = ()  # baselines this final student was picked to beat


def _tokenizer_and_task(recipe: Recipe, teacher_run: Path) -> tuple[Any, TaskData]:
    """The teacher's tokenizer (from the study's reference run) and the recipe's task, loaded once per timing run."""
    return load_tokenizer(str(teacher_run / "models" / "teacher")), load_task(recipe.task, recipe.seed)


def time_frontier(recipe: Recipe, spec: SearchSpec, entries: list[Entry]) -> Frontier:
    """Every form of `entries` (the teacher first) timed together on what the study's latency is measured on
    (`study.latency.timing_inputs`: one padded batch, or real texts at their own lengths, per text), then batch 1
    over `finalize.natural_texts` validation texts at their own lengths."""
    threads = recipe.threads or 1
    torch.set_num_threads(threads)
    tokenizer, task = _tokenizer_and_task(recipe, entries[0].run)
    inputs, fp = timing_inputs(recipe, spec, tokenizer, task)
    forms = {e.name: forms_on_disk(e.run, e.model, threads) for e in entries}
    fns = {f"{e}/{f}": partial(run_each, r, inputs) for e, fs in forms.items() for f, (_, r) in fs.items()}
    shape = f"seq {fp.seq}" if fp.shape == "padded" else f"{len(inputs)} texts at their own lengths, ~{fp.seq} tokens"
    log.info(
        "final timing run: %d forms, %d repeats x %d calls each (%s, %d threads)",
        len(fns),
        spec.finalize.repeats,
        spec.finalize.runs,
        shape,
        threads,
    )
    repeats, redone = repeated(fns, runs=spec.finalize.runs, repeats=spec.finalize.repeats, max_redo=3)
    timed = {k: t.per(len(inputs)) for k, t in repeats.items()}
    natural = _natural(forms, recipe, tokenizer, task, spec.finalize.natural_texts, recipe.seed)
    teacher = {f"teacher/{f}": timed[f"teacher/{f}"].p10_ms for f in forms["teacher"]}
    out = []
    for e in entries:
        config = load_config(str(e.run / "models" / e.model))
        gflops = flops_per_sequence(config, fp.seq) * fp.batch / 1e9
        timed_forms = {}
        for f, (ev, _) in forms[e.name].items():
            latency = Latency.of(
                timed[f"{e.name}/{f}"],
                teacher,
                runtime=ev.runtime,
                precision=ev.precision,
                batch=fp.batch,
                seq=fp.seq,
                shape=fp.shape,
                threads=threads,
                params=ev.latency.params if ev.latency else 0,
                gflops=gflops,
            )
            timed_forms[f] = ev.model_copy(update={"latency": latency, "natural": natural.get(f"{e.name}/{f}")})
        out.append(
            FrontierEntry(
                name=e.name,
                kind=e.kind,
                trial=e.trial,
                path=str(e.run),
                arch=Architecture.of(config),
                forms=timed_forms,
                challenges=list(e.challenges),
            )
        )
    reference = fastest(teacher)
    assert reference is not None  # the teacher's folder always has its PyTorch form
    return Frontier(
        target=get_target(spec.target).name,
        reference=reference,
        reference_ms=teacher[reference],
        seq=fp.seq,
        latency_shape=fp.shape,
        threads=threads,
        runs=spec.finalize.runs,
        repeats=spec.finalize.repeats,
        repeats_redone=len(redone),
        entries=out,
    )


def time_trials(recipe: Recipe, spec: SearchSpec, teacher_run: Path, trials: Trials) -> list[TrialTiming]:
    """The students of `trials` timed beside the teacher's forms in one interleaved session, repeated like the final
    timing run, each speed-up against the fastest of those forms: the latency model's check.

    Why not each trial's own measurement: it is one timing series, taken in the process that had just trained the
    student, at whatever minute the trial ended. Measured on the benchmark's 18 trials: those series read the
    students 12.5% slower than predicted (median, relative to the teacher); the same files re-timed together 4.0-6.0%
    beside the reference form alone, 5.5% beside all five teacher forms (the reference then ran at the 6.41 ms
    calibration had measured); a fresh process timing each as a trial does, 4.5-13% from one minute to the next."""
    runs = [(n, s) for n, s in trials if (Path(s.path) / "metrics.json").is_file()]  # folders may have been deleted
    if len(runs) < 2:
        return []
    threads = recipe.threads or 1
    torch.set_num_threads(threads)
    inputs, _ = timing_inputs(recipe, spec, *_tokenizer_and_task(recipe, teacher_run))  # as the model predicts
    forms = forms_on_disk(teacher_run, "teacher", threads)
    fns = {f"teacher/{f}": partial(run_each, r, inputs) for f, (_, r) in forms.items()}
    for n, s in runs:
        form = forms_on_disk(Path(s.path), spec.student, threads, s.form).get(s.form)
        if form is not None:
            fns[f"trial-{n}"] = partial(run_each, form[1], inputs)
    log.info(
        "latency model check: %d proxy trials re-timed beside the teacher's forms (%d repeats x %d calls)",
        sum(k.startswith("trial-") for k in fns),
        spec.finalize.repeats,
        spec.finalize.runs,
    )
    timed, _ = repeated(fns, runs=spec.finalize.runs, repeats=spec.finalize.repeats, max_redo=3)
    reference = fastest({k: t.p10_ms for k, t in timed.items() if k.startswith("teacher/")})
    assert reference is not None
    ref = timed[reference].p10_ms
    return [
        TrialTiming(
            trial=n,
            form=s.form,
            predicted_speedup=s.predicted_speedup,
            p10_ms=t.per(len(inputs)).p10_ms,  # per input (per text at natural lengths)
            speedup=ref / t.p10_ms,
            reference=reference,
        )
        for n, s in runs
        if (t := timed.get(f"trial-{n}"))
    ]


def _natural(
    forms: dict[str, dict[str, tuple[FormEval, Runner]]], recipe: Recipe, tokenizer: Any, task: Any, n: int, seed: int
) -> dict[str, NaturalLatency]:
    """Batch 1 over `n` validation texts at their own lengths; speed-ups per text against the teacher's fastest form."""
    if n <= 0:
        return {}
    batches, tokens = single_batches(
        encode(task.splits["validation"], tokenizer, recipe.task.max_length, recipe.cache_path()), n, seed
    )
    times = natural_lengths({f"{e}/{f}": r for e, fs in forms.items() for f, (_, r) in fs.items()}, batches)
    return NaturalLatency.of(times, [k for k in times if k.startswith("teacher/")], tokens)
