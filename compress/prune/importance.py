"""Importance of weights for structured pruning: squared magnitude, or first-order Taylor |w * dL/dw|."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from compress.core.errors import CompressError
from compress.data.encoding import MODEL_INPUTS
from compress.modeling.heads import logits_of
from compress.tasks.kinds import KINDS, TaskKind

Batches = Iterable[dict[str, torch.Tensor]]


def accumulate_gradients(model: torch.nn.Module, batches: Batches, kind: TaskKind = KINDS["classification"]) -> None:
    """Task-loss gradients summed over `batches`, for Taylor importance (|w * dL/dw|)."""
    model.zero_grad(set_to_none=True)
    model.train()
    for b in batches:
        out = model(*(b[k] for k in MODEL_INPUTS))
        kind.supervised_loss(logits_of(out), b["labels"]).backward()
    model.eval()


def score(w: torch.Tensor, importance: str) -> torch.Tensor:
    """Elementwise importance: squared magnitude, or first-order Taylor |w * grad|."""
    if importance == "taylor":
        if w.grad is None:
            raise CompressError(
                "taylor importance needs gradients; give the prune pass task batches (taylor_samples > 0)"
            )
        return (w.detach() * w.grad).abs()
    return w.detach() ** 2


def head_scores(model, importance: str) -> list[torch.Tensor]:
    """Per layer, one score per head: its Q/K/V rows and its columns of the attention output projection."""
    out = []
    for layer in model.bert.encoder.layer:
        s, o = layer.attention.self, layer.attention.output.dense
        d = s.attention_head_size
        rows = sum(score(m.weight, importance).sum(1) for m in (s.query, s.key, s.value)) + score(
            o.weight, importance
        ).sum(0)
        out.append(rows.reshape(-1, d).sum(1))
    return out
