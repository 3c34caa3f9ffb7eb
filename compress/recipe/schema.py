"""A recipe: a task, a teacher and an ordered list of passes (plus an optional search section)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from compress.recipe.search import SearchSpec
from compress.recipe.task import TaskSpec
from compress.recipe.teacher import TeacherSpec


class PassSpec(BaseModel):
    """One entry of `passes:`; its `options` are checked against the pass's own schema by the registry."""

    model_config = ConfigDict(extra="forbid")
    name: str
    enabled: bool = Field(True, description="false skips the pass (a search can switch passes on and off)")
    options: dict[str, Any] = {}


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="run name: results/<name>/")
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: PositiveInt | None = Field(None, description="CPU intra-op threads; default: torch's choice")
    output_dir: str = "results"
    cache_dir: str | None = Field(None, description="content-hash caches; default <output_dir>/cache")
    task: TaskSpec = TaskSpec()
    teacher: TeacherSpec = TeacherSpec()
    passes: list[PassSpec] = Field(min_length=1)
    search: SearchSpec | None = Field(None, description="search space and objectives for `compress search`")

    def cache_path(self) -> Path:
        return Path(self.cache_dir or Path(self.output_dir) / "cache")

    def raw(self, **changes: Any) -> dict[str, Any]:
        """The recipe as plain data (the search section left out), with top-level `changes`: the starting point
        of derived runs (search trials, reference runs), which are then re-parsed."""
        return self.model_dump(mode="json", exclude={"search"}) | changes
