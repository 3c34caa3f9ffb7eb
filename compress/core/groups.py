"""The group structure of a SqueezeBERT layer: six 1x1 convolutions, their channels and valid group counts.

The one home of these names; it imports nothing from compress so every layer of the code can use it.
Invalid input raises ValueError (callers turn it into their own error with context).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar


@dataclass(frozen=True)
class Groups:
    """Group counts of the six 1x1 convolutions of every layer (SqueezeBERT paper: 4,4,4,1,4,4)."""

    q: int = 1
    k: int = 1
    v: int = 1
    post_attention: int = 1
    intermediate: int = 1
    output: int = 1

    # as a recipe option (pydantic validates this dataclass): no unknown keys
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    def __post_init__(self) -> None:
        bad = {m: g for m, g in self.as_dict().items() if not isinstance(g, int) or g < 1}
        if bad:
            raise ValueError(f"group counts must be positive integers, got {bad}")

    @classmethod
    def parse(cls, text: str) -> Groups:
        """ "4,4,4,1,4,4" (q,k,v,post_attention,intermediate,output)."""
        parts = [p for p in str(text).replace(" ", "").split(",") if p]
        if len(parts) != len(MATRICES) or not all(p.isdigit() for p in parts):
            raise ValueError(
                f"groups {text!r}: expected six integers q,k,v,post_attention,intermediate,output (e.g. 4,4,4,1,4,4)"
            )
        return cls(*map(int, parts))

    @classmethod
    def of(cls, config: Any) -> Groups:
        """The group counts of a transformers config (SqueezeBERT's `<matrix>_groups`; 1 for BERT)."""
        return cls(**{m: int(getattr(config, f"{m}_groups", 1)) for m in MATRICES})

    def as_dict(self) -> dict[str, int]:
        return {m: getattr(self, m) for m in MATRICES}

    def __str__(self) -> str:
        return ",".join(str(getattr(self, m)) for m in MATRICES)


MATRICES: tuple[str, ...] = tuple(f.name for f in fields(Groups))


def channels(hidden: int, ffn: int) -> dict[str, tuple[int, int]]:
    """(in, out) channels of each matrix."""
    h = (hidden, hidden)
    return {"q": h, "k": h, "v": h, "post_attention": h, "intermediate": (hidden, ffn), "output": (ffn, hidden)}


def valid_groups(cin: int, cout: int) -> list[int]:
    return [g for g in range(1, math.gcd(cin, cout) + 1) if cin % g == 0 and cout % g == 0]


def check_groups(groups: Groups, hidden: int, ffn: int) -> None:
    """Every group count must divide its matrix's input and output channels."""
    for name, (cin, cout) in channels(hidden, ffn).items():
        g = getattr(groups, name)
        if g < 1 or cin % g or cout % g:
            raise ValueError(
                f"groups.{name}={g} must divide its {cin} input and {cout} output channels; valid: "
                f"{', '.join(map(str, valid_groups(cin, cout)))}"
            )
