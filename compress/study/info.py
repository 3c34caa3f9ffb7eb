"""A study folder's record (`search.json`) and its finished trials: what finalize and report read of a study.

`compress search` writes `StudyInfo` once its reference run has measured the teacher; everything downstream
reads it back through `read_info`, so a missing or older file is one line that names the fix, never a KeyError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import optuna
from pydantic import BaseModel, ConfigDict, ValidationError

from compress.core.atomic import atomic_write_json
from compress.core.errors import CompressError, first_line
from compress.core.frontier import TeacherReference, TrialScore
from compress.recipe import Recipe, load_recipe
from compress.recipe.search import SearchSpec
from compress.study.storage import reopen

INFO = "search.json"


class StudyInfo(BaseModel):
    """What a study is: its name and storage (password masked), the recipe it runs, and the teacher it is
    measured against (the reference run's forms)."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # older files may carry keys this version dropped
    study: str
    storage: str  # masked: give the password again with --storage or COMPRESS_STORAGE
    teacher: TeacherReference
    recipe: str = ""
    overrides: list[str] = []
    objectives: list[str] = ["accuracy", "latency"]
    directions: list[Literal["maximize", "minimize"]] = ["maximize", "minimize"]
    target: str | None = None  # an alias (openvino) recorded as the target it means
    latency_device: str = "cpu"  # training may use GPUs; latency is the target's on the CPU
    search: SearchSpec = SearchSpec()  # the recipe's search section as run (groups_up_to resolved)

    def write(self, folder: Path) -> None:
        atomic_write_json(folder / INFO, self.model_dump(mode="json"))

    def load_recipe(self) -> Recipe:
        """The study's recipe with the overrides it was searched with."""
        return load_recipe(self.recipe, self.overrides)

    def open(self, storage: str | None = None) -> optuna.Study:
        """The Optuna study; `storage` replaces the recorded URL (one recorded without its password). A study that
        cannot be opened is one line (report and finalize alike)."""
        store = reopen(self.storage, storage)  # its own errors are already one line that names the fix
        try:
            return optuna.load_study(study_name=self.study, storage=store)
        except Exception as e:  # KeyError for a missing study name, storage errors of every backend
            raise CompressError(f"cannot open study {self.study!r} in {self.storage} ({first_line(e)})") from None


def is_study(folder: Path) -> bool:
    return (Path(folder) / INFO).is_file()


def read_info(folder: Path) -> StudyInfo:
    """A study folder's record; one line naming the fix when it is missing or unreadable."""
    path = Path(folder) / INFO
    if not path.is_file():
        raise CompressError(
            f"{folder}: not a study folder (no {INFO}); run compress search first, or pass results/<study>"
        )
    try:
        return StudyInfo.model_validate(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise CompressError(f"{path}: not JSON ({e}); rerun compress search --resume to write it again") from None
    except ValidationError as e:
        first = e.errors()[0]
        what = "no teacher reference" if first["loc"][:1] == ("teacher",) else "no study record"
        raise CompressError(
            f"{path}: {what} this compress version reads ({first['msg']} at {first['loc']}); rerun compress search "
            "--resume to measure it again"
        ) from None


def scored_trials(info: StudyInfo, storage: str | None = None) -> list[tuple[int, TrialScore]]:
    """(number, score) of every complete trial that was scored."""
    done = optuna.trial.TrialState.COMPLETE
    trials = info.open(storage).trials
    return [
        (t.number, TrialScore.model_validate(t.user_attrs["score"]))
        for t in trials
        if t.state == done and "score" in t.user_attrs
    ]
