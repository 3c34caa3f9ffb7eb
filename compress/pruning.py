"""Structured pruning of whole attention heads and FFN channels, kept loadable by plain transformers.

What transformers can reload decides what we prune:
- heads: BERT only, through transformers' own `prune_heads` (it records `config.pruned_heads`, which
  `from_pretrained` replays), so layers may keep different numbers of heads and head_dim is unchanged.
  SqueezeBERT's attention width is tied to its hidden size in its config: no head pruning there.
- FFN channels: the same count in every layer (`config.intermediate_size` is one number). BERT goes
  through torch-pruning's dependency graph (importance and the coupled intermediate/output slicing);
  SqueezeBERT's grouped 1x1 convs are sliced here, because a grouped conv's input channels are per-group
  slices that must shrink evenly so the group counts stay valid - beyond what torch-pruning's graph does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
import torch_pruning as tp

from compress.errors import CompressError

Batches = Iterable[dict[str, torch.Tensor]]


def accumulate_gradients(model: torch.nn.Module, batches: Batches) -> None:
    """Task-loss gradients summed over `batches`, for Taylor importance (|w * dL/dw|)."""
    model.zero_grad(set_to_none=True)
    model.train()
    for b in batches:
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"])
        F.cross_entropy(out.logits, b["labels"]).backward()
    model.eval()


def _score(w: torch.Tensor, importance: str) -> torch.Tensor:
    """Elementwise importance: squared magnitude, or first-order Taylor |w * grad|."""
    if importance == "taylor":
        if w.grad is None:
            raise CompressError("taylor importance needs gradients; give the prune pass task batches (taylor_samples > 0)")
        return (w.detach() * w.grad).abs()
    return w.detach() ** 2


def head_scores(model, importance: str) -> list[torch.Tensor]:
    """Per layer, one score per head: its Q/K/V rows and its columns of the attention output projection."""
    out = []
    for layer in model.bert.encoder.layer:
        s, o = layer.attention.self, layer.attention.output.dense
        d = s.attention_head_size
        rows = sum(_score(m.weight, importance).sum(1) for m in (s.query, s.key, s.value)) + _score(o.weight, importance).sum(0)
        out.append(rows.reshape(-1, d).sum(1))
    return out


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
            fix = f"use head_ratio below {(len(scores[i]) - 0.5) / len(scores[i]):.3f}" if scope == "layer" else "lower head_ratio or use scope: layer"
            raise CompressError(f"head_ratio {ratio} removes every head of layer {i}; a layer must keep one head - {fix}")
    return {i: sorted(h) for i, h in plan.items() if h}


def prune_bert_ffn(model, ratio: float, importance: str, example: dict[str, torch.Tensor]) -> int:
    """Remove the same number of FFN channels from every BERT layer with torch-pruning; return the new width."""
    layers = model.bert.encoder.layer
    width = layers[0].intermediate.dense.out_features
    k = round(ratio * width)
    if k == 0:
        return width
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=dict(example), output_transform=lambda out: out.logits.sum(), verbose=False)
    imp = tp.importance.TaylorImportance() if importance == "taylor" else tp.importance.MagnitudeImportance(p=2)
    for layer in layers:
        dense = layer.intermediate.dense
        group = graph.get_pruning_group(dense, tp.prune_linear_out_channels, idxs=list(range(dense.out_features)))
        remove = torch.argsort(imp(group))[:k].tolist()  # the group couples intermediate rows with output columns
        graph.get_pruning_group(dense, tp.prune_linear_out_channels, idxs=remove).prune()
    model.config.intermediate_size = width - k
    return width - k


def ffn_segments(config) -> int:
    """FFN channels fall into this many equal segments, each inside one group of both grouped convs."""
    return math.lcm(getattr(config, "intermediate_groups", 1), getattr(config, "output_groups", 1))


def check_squeeze_ratio(config, ratio: float) -> int:
    """Channels removed per layer; refuses a ratio that would leave the group counts invalid."""
    width, seg = config.intermediate_size, ffn_segments(config)
    k = round(ratio * width)
    if k % seg:
        lo, hi = (k // seg) * seg, (k // seg + 1) * seg
        near = min((lo, hi), key=lambda x: abs(x - k))
        raise CompressError(f"ffn_ratio {ratio} removes {k} of {width} FFN channels, which {seg} groups cannot share evenly "
                            f"(intermediate_groups={config.intermediate_groups}, output_groups={config.output_groups}); "
                            f"nearest valid ratio: {near / width:.4g} ({near} channels)")
    return k


def prune_squeezebert_ffn(model, ratio: float, importance: str) -> int:
    """Remove the same number of FFN channels from every SqueezeBERT layer, evenly per group; return the new width."""
    config = model.config
    k = check_squeeze_ratio(config, ratio)
    width, seg = config.intermediate_size, ffn_segments(config)
    if k == 0:
        return width
    gi, go = config.intermediate_groups, config.output_groups
    for layer in model.transformer.encoder.layers:
        inter, out = layer.intermediate.conv1d, layer.output.conv1d
        rows = _score(inter.weight, importance).sum((1, 2))  # [F]
        w_out = _score(out.weight, importance)  # [H, F/go, 1]: group G's rows read channels G*F/go + j
        per_out = w_out.reshape(go, -1, width // go).sum(1).reshape(-1)  # [F] in channel order
        scores = (rows + per_out).reshape(seg, -1)
        keep = torch.sort(torch.argsort(scores, dim=1, descending=True)[:, : width // seg - k // seg], dim=1).values
        keep = (keep + torch.arange(seg)[:, None] * (width // seg)).reshape(-1)  # global channel ids, group order kept
        new_in = torch.nn.Conv1d(inter.in_channels, width - k, 1, groups=gi)
        new_in.weight.data, new_in.bias.data = inter.weight.data[keep].clone(), inter.bias.data[keep].clone()
        local = keep.reshape(go, -1) - torch.arange(go)[:, None] * (width // go)  # per output group, its kept input slots
        w = out.weight.data.reshape(go, -1, width // go, 1)
        new_out = torch.nn.Conv1d(width - k, out.out_channels, 1, groups=go)
        new_out.weight.data = torch.stack([w[G][:, local[G]] for G in range(go)]).reshape(out.out_channels, -1, 1).clone()
        new_out.bias.data = out.bias.data.clone()
        layer.intermediate.conv1d, layer.output.conv1d = new_in, new_out
    config.intermediate_size = width - k
    return width - k
