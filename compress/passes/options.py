"""Recipe options shared by every pass that trains (fine-tuning, distillation)."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from compress.pipeline.registry import PassConfig
from compress.train.loop import Schedule


class TrainOptions(PassConfig):
    epochs: PositiveInt = 3
    lr: float = Field(1e-4, gt=0, lt=1)
    batch_size: PositiveInt = 32
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)

    def schedule(self) -> Schedule:
        return Schedule(self.epochs, self.lr, self.batch_size, self.warmup_ratio, self.weight_decay)
