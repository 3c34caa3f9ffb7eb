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
    """Per layer, one score per head: its Q/K/V rows and its columns of the attention output projection
    (BERT's Linears, or SqueezeBERT's 1x1 convs, grouped or not)."""
    if model.config.model_type == "squeezebert":
        parts = [
            (L.attention, (L.attention.query, L.attention.key, L.attention.value), L.post_attention.conv1d)
            for L in model.transformer.encoder.layers
        ]
    else:
        parts = [
            (a.self, (a.self.query, a.self.key, a.self.value), a.output.dense)
            for a in (layer.attention for layer in model.bert.encoder.layer)
        ]
    out = []
    for att, qkv, post in parts:
        rows = sum(score(m.weight, importance).flatten(1).sum(1) for m in qkv) + _input_scores(post, importance)
        out.append(rows.reshape(-1, att.attention_head_size).sum(1))
    return out


def _input_scores(m: torch.nn.Linear | torch.nn.Conv1d, importance: str) -> torch.Tensor:
    """Summed importance of each input channel of a Linear or a (grouped) 1x1 conv."""
    s = score(m.weight, importance).flatten(1)  # [out, in / groups]
    g = getattr(m, "groups", 1)
    return s.reshape(g, s.shape[0] // g, -1).sum(1).reshape(-1)  # group i's columns are inputs i*in/g ...
