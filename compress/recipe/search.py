"""The `search:` section of a recipe: what `compress search` may change, what it optimizes, what it forbids.

    search:
      trials: 8
      objectives: [accuracy, latency]        # + size; "accuracy" is the task's metric (task.metric: mcc, f1, pearson,
      ...)
      max_accuracy_drop: 0.01                # constraint vs the teacher (validation, task.metric)
      space:
        passes.convert.groups: {groups: [1, 2, 4]}   # each of the six group counts from this list
        passes.convert.layers: {choices: [3, 4, 6]}
        passes.distill.lr: {low: 5.0e-5, high: 3.0e-4, log: true}
        passes.quantize.enabled: {choices: [true, false]}

Every key of `space` is a recipe key path (the same paths `--set` takes), so anything a recipe can say,
a search can vary; each trial is the recipe with the sampled values set. Sampling them is
`compress.study.space`'s job; this module is only the schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator


class Param(BaseModel):
    """One searched value: `choices`, a range (`low`/`high`, optional `log`/`step`), or `groups`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    choices: list[str | int | float | bool | None] | None = Field(None, min_length=1)
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    groups: list[PositiveInt] | None = Field(
        None, min_length=1, description="six group counts, each chosen from this list"
    )
    groups_up_to: PositiveInt | None = Field(
        None, description="six group counts, each from every divisor of the channel counts up to this"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        kinds = [
            self.choices is not None,
            self.low is not None or self.high is not None,
            self.groups is not None or self.groups_up_to is not None,
        ]
        if sum(kinds) != 1 or (self.groups is not None and self.groups_up_to is not None):
            raise ValueError("give exactly one of: choices: [...], low: + high:, groups: [...], groups_up_to: N")
        if kinds[1]:
            if self.low is None or self.high is None or self.low > self.high:
                raise ValueError(f"a range needs low <= high (got low={self.low}, high={self.high})")
            if self.log and self.low <= 0:
                raise ValueError("a log range needs low > 0")
        return self

    def is_int_range(self) -> bool:
        if self.low is None or self.high is None:
            return False
        integral = float(self.low).is_integer() and float(self.high).is_integer()
        return integral and not self.log and (self.step is None or float(self.step).is_integer())

    def first(self) -> Any:
        """A representative value (used to check the key path before any trial runs)."""
        if self.choices is not None:
            return self.choices[0]
        if self.groups is not None or self.groups_up_to is not None:
            return "1,1,1,1,1,1"
        assert self.low is not None  # a range: checked by _one_kind
        return int(self.low) if self.is_int_range() else self.low


class BaselineSpec(BaseModel):
    """A peer baseline trained like the final students: `layerdrop` (DistilBERT-style: every other teacher
    layer, dense, distilled) or `pruned` (the teacher with heads and FFN channels pruned, distilled)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class FinalizeSpec(BaseModel):
    """After the proxy trials: retrain the best distinct front students at full budget, time them with the baselines."""

    model_config = ConfigDict(extra="forbid")
    top_k: int = Field(
        0, ge=0, description="front students to retrain when the search ends (0: only by compress finalize)"
    )
    pick: Literal["spread", "fastest"] = Field(
        "spread",
        description="which top_k students of the feasible front: spread from the fastest to the most accurate (one: "
        "its middle), or the fastest (the constraints, e.g. max_accuracy_drop, say what is accurate enough)",
    )
    set: dict[str, Any] = Field(
        default_factory=lambda: {"passes.distill.max_train_samples": None},
        description=(
            "recipe key paths -> values for the full budget (more data, epochs); applied to finalists and "
            "baselines alike"
        ),
    )
    runs: PositiveInt = Field(50, description="timed calls per form and repeat in the final timing run")
    repeats: PositiveInt = Field(
        3, description="independent repeats of the final timing run (a repeat slowed by machine load is redone)"
    )
    natural_texts: int = Field(100, ge=0, description="validation texts timed at their own lengths, batch 1")
    check_trials: int = Field(
        30,
        ge=0,
        description="proxy trials re-timed after the final timing run, beside the teacher's forms in one repeated "
        "session, to check the latency model (spread along the predicted latency when there are more; 0: off, the "
        "check uses each trial's own timing)",
    )
    timeout: float | None = Field(
        None,
        gt=0,
        description="seconds of wall clock for retraining: no final student starts after it (the first always trains)",
    )
    forms: Literal["all", "target"] = Field(
        "all",
        description="all: each final student and baseline is also built and scored in every deploy form the teacher "
        "is timed in, and compared in its fastest, as the teacher is (compress.finalize.forms); target: only the "
        "study's target form",
    )
    cover_baselines: bool = Field(
        True,
        description="also retrain, for each peer baseline, the student meant to beat it: the slowest of the proxies "
        "tied with the best validation score among those the latency model puts faster than the baseline "
        "(compress.finalize.front.challengers)",
    )


class SearchSpec(BaseModel):
    """Objectives, constraints, sampler and search space of a study."""

    model_config = ConfigDict(extra="forbid")
    study: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="study name; default: the recipe name"
    )
    trials: PositiveInt = Field(12, description="finished (complete or pruned) trials to reach")
    timeout: float | None = Field(
        None,
        gt=0,
        description="seconds of wall clock for the proxy trials (every worker): no trial starts after it; "
        "the study stops with the trials it finished (Optuna's optimize timeout)",
    )
    sampler: Literal["nsga2", "tpe", "random"] = "nsga2"
    population: PositiveInt | None = Field(None, description="NSGA-II population; default: about a third of the trials")
    objectives: list[Literal["accuracy", "latency", "size"]] = Field(["accuracy", "latency"], min_length=2)
    student: str = Field("student", description="the converted student whose forms are scored")
    target: str = Field(
        "onnxruntime-int8",
        description="deploy target every trial is scored in (latency predicted, accuracy of that form)",
    )
    latency_shape: Literal["padded", "natural"] = Field(
        "padded",
        description="what the search times and predicts: padded, the evaluate pass's batch x latency_seq; natural, "
        "batch 1 over the task's validation texts at their own lengths (ms per text: a service answering one request "
        "at a time), where the runtimes rank differently (OpenVINO compiles per input shape)",
    )
    baselines: list[BaselineSpec] = Field(
        [], description="peer baselines timed with the final students: layerdrop, pruned"
    )
    finalize: FinalizeSpec = Field(default_factory=FinalizeSpec)
    calibration_runs: PositiveInt = Field(30, description="timed calls per block in each of the 3 calibration repeats")
    max_accuracy_drop: float | None = Field(
        None,
        ge=0,
        le=1,
        description="feasible only within this much of the teacher's validation score, task.metric (0.01 = 1 pt)",
    )
    latency_budget_ms: float | None = Field(
        None,
        gt=0,
        description="feasible only at or below this predicted latency (p10 ms in the target; per text when natural)",
    )
    prune: bool = Field(
        True, description="stop a trial early when a finished trial that was as cheap was better at the same point"
    )
    prune_margin: float = Field(
        0.01, ge=0, description="how much better (validation accuracy) the dominating trial must have been"
    )
    startup_trials: int = Field(3, ge=0, description="no pruning until this many trials finished")
    heartbeat_seconds: PositiveInt = 10
    stale_after_seconds: PositiveInt = Field(30, description="a running trial silent this long is failed and retried")
    max_retries: int = Field(2, ge=0, description="retries of a trial whose worker died")
    space: dict[str, Param] = {}
    seeds: list[dict[str, Any]] = Field(
        [],
        description="configurations tried first, space key -> value (keys left out are sampled), e.g. dense students: "
        '{passes.convert.groups: "1,1,1,1,1,1", passes.convert.layers: 3}',
    )

    @model_validator(mode="after")
    def _distinct(self) -> SearchSpec:
        if len(set(self.objectives)) != len(self.objectives) or "accuracy" not in self.objectives:
            raise ValueError(f"objectives must be distinct and include accuracy (got {self.objectives})")
        return self

    def directions(self) -> list[Literal["maximize", "minimize"]]:
        return ["maximize" if o == "accuracy" else "minimize" for o in self.objectives]
