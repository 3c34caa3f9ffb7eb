"""Which attention heads to remove: the same share per layer, or the lowest-scoring heads overall."""

from __future__ import annotations

import torch

from compress.core.errors import CompressError


def plan_heads(scores: list[torch.Tensor], ratio: float, scope: str) -> dict[int, list[int]]:
    """Which heads to remove per layer (layer scope: the same share of each layer; global: lowest overall)."""
    if ratio == 0:
        return {}
    if scope == "layer":
        plan = {i: torch.argsort(s)[: round(ratio * len(s))].tolist() for i, s in enumerate(scores)}
    else:
        flat = torch.cat([s / s.sum() for s in scores])  # normalized per layer: raw scales differ between layers
        owner = [(i, h) for i, s in enumerate(scores) for h in range(len(s))]
        plan = {}
        for j in torch.argsort(flat)[: round(ratio * len(flat))].tolist():
            plan.setdefault(owner[j][0], []).append(owner[j][1])
    for i, heads in plan.items():
        if len(heads) >= len(scores[i]):
            fix = (
                f"use head_ratio below {(len(scores[i]) - 0.5) / len(scores[i]):.3f}"
                if scope == "layer"
                else "lower head_ratio or use scope: layer"
            )
            raise CompressError(
                f"head_ratio {ratio} removes every head of layer {i}; a layer must keep one head - {fix}"
            )
    return {i: sorted(h) for i, h in plan.items() if h}
