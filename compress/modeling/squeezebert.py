"""Attention-head pruning for SqueezeBERT: an attention narrower than the residual stream.

transformers' SqueezeBERT ties every layer's attention width to the hidden size, and its
`SqueezeBertModel._prune_heads` is unusable (it calls `encoder.layer[i].attention.prune_heads`, neither of which
exists). A 4-layer student spends about a third of its time in attention at 12 heads, so keeping the residual stream
and dropping heads is a speed lever that narrowing the whole model (fewer heads *and* fewer channels) cannot match.

`prune_heads` below slices the Q/K/V convs' output channels and the post-attention conv's input channels, the way
transformers' BERT `prune_heads` slices its Linears; `install()` makes it SqueezeBERT's `_prune_heads`, so
`config.pruned_heads` is recorded and `from_pretrained` rebuilds the narrow shapes before it loads the weights,
exactly as for a pruned BERT (without compress imported, transformers cannot load such a checkpoint).

Grouped Q/K/V/post-attention convs must lose the same number of heads in every group (`head_segments`), so that
their group counts stay valid.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn
from transformers.models.squeezebert import modeling_squeezebert as sq

from compress.core.errors import CompressError

_DONE = "pruned_heads"  # on each attention module: original indices of its heads already removed, as BERT keeps them


def head_segments(config: Any) -> int:
    """Heads fall into this many equal segments, each inside one group of Q, K, V and the post-attention conv."""
    return math.lcm(config.q_groups, config.k_groups, config.v_groups, config.post_attention_groups)


def check_heads_divisible(config: Any) -> int:
    """`head_segments(config)`, or one line saying why this student's heads cannot be pruned."""
    seg = head_segments(config)
    if config.num_attention_heads % seg:
        raise CompressError(
            f"cannot prune heads: {config.num_attention_heads} heads do not split evenly over the attention's "
            f"{seg} groups (q/k/v/post_attention groups {config.q_groups},{config.k_groups},{config.v_groups},"
            f"{config.post_attention_groups}); use group counts that divide the head count"
        )
    return seg


def _keep_rows(conv: nn.Conv1d, keep: torch.Tensor) -> nn.Conv1d:
    """`conv` with only the output channels `keep` (sorted, as many from every group)."""
    new = nn.Conv1d(conv.in_channels, len(keep), 1, groups=conv.groups, bias=conv.bias is not None)
    bias = {} if conv.bias is None else {"bias": conv.bias.detach()[keep]}
    new.load_state_dict({"weight": conv.weight.detach()[keep], **bias})
    return new.to(conv.weight.device)


def _keep_inputs(conv: nn.Conv1d, keep: torch.Tensor) -> nn.Conv1d:
    """`conv` reading only the input channels `keep` (sorted, as many from every group)."""
    g, cin = conv.groups, conv.in_channels
    per = cin // g
    local = keep.reshape(g, -1) - torch.arange(g)[:, None] * per  # each group's kept channels, local indices
    w = conv.weight.reshape(g, conv.out_channels // g, per)
    w = torch.stack([w[i][:, local[i]] for i in range(g)]).reshape(conv.out_channels, -1, 1)
    new = nn.Conv1d(len(keep), conv.out_channels, 1, groups=g, bias=conv.bias is not None)
    new.load_state_dict({"weight": w.detach(), **({} if conv.bias is None else {"bias": conv.bias.detach()})})
    return new.to(conv.weight.device)


def prune_layer_heads(layer: sq.SqueezeBertModule, heads: set[int], total: int, segments: int) -> None:
    """Remove `heads` (indices among the layer's original `total` heads) from one SqueezeBERT layer."""
    att = layer.attention
    done: set[int] = getattr(att, _DONE, set())
    alive = [h for h in range(total) if h not in done]  # original index of each current slot
    drop = {alive.index(h) for h in heads - done}
    if not drop:
        return
    n, d = len(alive), att.attention_head_size
    kept = [s for s in range(n) if s not in drop]
    per = n // segments
    if any(sum(1 for s in kept if s // per == i) != len(kept) // segments for i in range(segments)) or not kept:
        raise CompressError(
            f"cannot prune heads {sorted(heads)}: each of the attention's {segments} groups must keep the same "
            "number of heads (at least one)"
        )
    keep = torch.tensor([s * d + j for s in kept for j in range(d)])
    att.query, att.key, att.value = (_keep_rows(m, keep) for m in (att.query, att.key, att.value))
    layer.post_attention.conv1d = _keep_inputs(layer.post_attention.conv1d, keep)
    att.num_attention_heads, att.all_head_size = len(kept), len(kept) * d
    setattr(att, _DONE, done | heads)


def _prune_heads(self: sq.SqueezeBertModel, heads_to_prune: dict[int, list[int]]) -> None:
    """SqueezeBERT's `_prune_heads` (called by `PreTrainedModel.prune_heads` and by `from_pretrained` through
    `config.pruned_heads`): heads are original indices, as for BERT."""
    if not any(heads_to_prune.values()):
        return
    seg = check_heads_divisible(self.config)
    for i, heads in heads_to_prune.items():
        layer = cast(sq.SqueezeBertModule, self.encoder.layers[int(i)])
        prune_layer_heads(layer, set(heads), self.config.num_attention_heads, seg)


def install() -> None:
    """Make transformers' SqueezeBERT prune heads with `_prune_heads` (idempotent)."""
    sq.SqueezeBertModel._prune_heads = _prune_heads  # type: ignore[method-assign]


install()
