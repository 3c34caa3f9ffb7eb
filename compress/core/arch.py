"""What decides a model's speed, as one record: the latency model predicts from it, trials and final entries carry
it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from compress.core.groups import Groups


class Architecture(BaseModel):
    """What decides a model's speed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hidden: int
    head_size: int
    heads: list[int]  # per layer (pruned heads differ between layers)
    ffn: int
    groups: dict[str, int]
    labels: int

    @classmethod
    def of(cls, config: Any) -> Architecture:
        """From a BERT or SqueezeBERT transformers config (or anything with the same attribute names)."""
        pruned = getattr(config, "pruned_heads", None) or {}
        heads = [
            config.num_attention_heads - len(pruned.get(i, pruned.get(str(i), [])))
            for i in range(config.num_hidden_layers)
        ]
        return cls(
            hidden=config.hidden_size,
            head_size=config.hidden_size // config.num_attention_heads,
            heads=heads,
            ffn=config.intermediate_size,
            groups=Groups.of(config).as_dict(),
            labels=config.num_labels,
        )

    def label(self) -> str:
        return f"{len(self.heads)} layers, groups {Groups(**self.groups)}, FFN {self.ffn}, heads {self.heads}"
