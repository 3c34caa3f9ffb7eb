"""FFN channel pruning: the same width in every layer, so a plain transformers config reloads the model.

BERT goes through torch-pruning's dependency graph (importance over the coupled intermediate rows and
output columns, and the slicing). SqueezeBERT's grouped 1x1 convs are sliced here: a grouped conv's input
channels are per-group slices that must shrink evenly so the group counts stay valid - beyond what
torch-pruning's graph does.
"""

from __future__ import annotations

import math

import torch
import torch_pruning as tp

from compress.core.errors import CompressError
from compress.modeling.heads import logits_of
from compress.prune.importance import score


def prune_bert_ffn(model, ratio: float, importance: str, example: dict[str, torch.Tensor]) -> int:
    """Remove the same number of FFN channels from every BERT layer with torch-pruning; return the new width."""
    layers = model.bert.encoder.layer
    width = layers[0].intermediate.dense.out_features
    k = round(ratio * width)
    if k == 0:
        return width
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=dict(example), output_transform=lambda out: logits_of(out).sum(), verbose=False
    )
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
        raise CompressError(
            f"ffn_ratio {ratio} removes {k} of {width} FFN channels, which {seg} groups cannot share evenly "
            f"(intermediate_groups={config.intermediate_groups}, output_groups={config.output_groups}); "
            f"nearest valid ratio: {near / width:.4g} ({near} channels)"
        )
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
        assert inter.bias is not None and out.bias is not None  # SqueezeBERT's convs have biases
        rows = score(inter.weight, importance).sum((1, 2))  # [F]
        w_out = score(out.weight, importance)  # [H, F/go, 1]: group G's rows read channels G*F/go + j
        per_out = w_out.reshape(go, -1, width // go).sum(1).reshape(-1)  # [F] in channel order
        scores = (rows + per_out).reshape(seg, -1)
        keep = torch.sort(torch.argsort(scores, dim=1, descending=True)[:, : width // seg - k // seg], dim=1).values
        keep = (keep + torch.arange(seg)[:, None] * (width // seg)).reshape(-1)  # global channel ids, group order kept
        new_in = torch.nn.Conv1d(inter.in_channels, width - k, 1, groups=gi)
        new_in.weight.data, _bias(new_in).data = inter.weight.data[keep].clone(), inter.bias.data[keep].clone()
        # per output group, its kept input slots
        local = keep.reshape(go, -1) - torch.arange(go)[:, None] * (width // go)
        w = out.weight.data.reshape(go, -1, width // go, 1)
        new_out = torch.nn.Conv1d(width - k, out.out_channels, 1, groups=go)
        new_out.weight.data = (
            torch.stack([w[G][:, local[G]] for G in range(go)]).reshape(out.out_channels, -1, 1).clone()
        )
        _bias(new_out).data = out.bias.data.clone()
        layer.intermediate.conv1d, layer.output.conv1d = new_in, new_out
    config.intermediate_size = width - k
    return width - k


def _bias(conv: torch.nn.Conv1d) -> torch.Tensor:
    assert conv.bias is not None  # built with bias=True
    return conv.bias
