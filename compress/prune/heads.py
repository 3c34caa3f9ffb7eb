"""Which attention heads to remove: the same share per layer, or the lowest-scoring heads overall."""

from __future__ import annotations

import torch

from compress.core.errors import CompressError


def plan_heads(scores: list[torch.Tensor], ratio: float, scope: str, segments: int = 1) -> dict[int, list[int]]:
    """Which heads to remove per layer (layer scope: the same share of each layer; global: lowest overall).

    `segments` > 1 (a SqueezeBERT with grouped attention convs): each layer's heads fall into that many equal runs,
    one per group, and each run loses the same number of its lowest-scoring heads."""
    if ratio == 0:
        return {}
    if segments > 1:
        return _plan_segments(scores, ratio, scope, segments)
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


def original_heads(slots: dict[int, list[int]], config) -> dict[int, list[int]]:
    """A plan over each layer's current head slots -> the same heads by original index, as `prune_heads` wants them
    (after an earlier pruning, slot s is the s-th head still alive)."""
    done = {int(k): set(v) for k, v in (getattr(config, "pruned_heads", None) or {}).items()}
    alive = {i: [h for h in range(config.num_attention_heads) if h not in done.get(i, set())] for i in slots}
    return {i: [alive[i][s] for s in heads] for i, heads in slots.items()}


def _plan_segments(scores: list[torch.Tensor], ratio: float, scope: str, segments: int) -> dict[int, list[int]]:
    if scope != "layer":
        raise CompressError(
            f"scope: global cannot keep heads even over the attention's {segments} groups; use scope: layer"
        )
    plan = {}
    for i, s in enumerate(scores):
        per, k = len(s) // segments, round(ratio * len(s))
        if k % segments or k >= len(s):
            ok = [r * segments / len(s) for r in range(1, per)]
            raise CompressError(
                f"head_ratio {ratio} removes {k} of layer {i}'s {len(s)} heads, which its {segments} attention groups "
                f"cannot lose evenly (keeping one each); valid ratios: {', '.join(f'{r:.4g}' for r in ok) or 'none'}"
            )
        runs = [torch.argsort(s[j * per : (j + 1) * per])[: k // segments].tolist() for j in range(segments)]
        plan[i] = sorted(j * per + h for j, low in enumerate(runs) for h in low)
    return {i: h for i, h in plan.items() if h}
