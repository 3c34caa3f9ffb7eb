"""A model as a sum of blocks: the parts of each layer of the inference form, for the latency model.

An `Architecture` says what matters for speed (width, heads per layer, FFN width, group counts, depth).
`plan` lists the blocks one forward pass runs and how often; `block` builds one of them as a module with
random weights and inputs of the right shape, using the very `Layer` methods the exported model runs
(`deploy/matmul_form.py`), so a block is timed exactly as it ships.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn
from transformers import SqueezeBertConfig, SqueezeBertForSequenceClassification

from compress.core.arch import Architecture
from compress.core.groups import Groups
from compress.deploy.matmul_form import EncoderForInference, GroupedLinear, Layer

# Block kinds, their shape parameters (in key order), and the Layer method that runs them.
KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "base": (("hidden", "labels"), ""),  # embeddings + pooler + classifier: a model with no layer
    "qkv": (("hidden", "heads", "head_size", "g"), "project"),  # Q, K, V fused into one grouped MatMul
    "proj": (("hidden", "heads", "head_size", "g"), "project_one"),  # one of Q, K, V (when they cannot fuse)
    "attend": (("heads", "head_size"), "attend"),
    "post": (("hidden", "heads", "head_size", "g"), "post_attention"),
    "ffn": (("hidden", "ffn", "g"), "feed_forward"),  # intermediate and output fused (same g > 1)
    "inter": (("hidden", "ffn", "g"), "intermediate"),
    "out": (("hidden", "ffn", "g"), "output"),
}


def key(kind: str, **shape: int) -> str:
    """A block's name: kind and shape, e.g. "qkv:hidden=384:heads=12:head_size=32:g=4"."""
    return ":".join([kind, *(f"{p}={shape[p]}" for p in KINDS[kind][0])])


def parse(block: str) -> tuple[str, dict[str, int]]:
    kind, *parts = block.split(":")
    return kind, {p.split("=")[0]: int(p.split("=")[1]) for p in parts}


def plan(arch: Architecture, fuse_dense_qkv: bool = True) -> Counter[str]:
    """The blocks a forward pass runs, with their counts; mirrors how `Layer` fuses (batched form; `fuse_dense_qkv`
    as the target's exporter sets it)."""
    g = Groups(**arch.groups)
    out: Counter[str] = Counter({key("base", hidden=arch.hidden, labels=arch.labels): 1})
    for heads in arch.heads:
        shape = {"hidden": arch.hidden, "heads": heads, "head_size": arch.head_size}
        if g.q == g.k == g.v and heads % g.q == 0 and (g.q > 1 or fuse_dense_qkv):
            out[key("qkv", **shape, g=g.q)] += 1
        else:
            for m in (g.q, g.k, g.v):
                out[key("proj", **shape, g=m)] += 1
        out[key("attend", heads=heads, head_size=arch.head_size)] += 1
        out[key("post", **shape, g=g.post_attention)] += 1
        if g.intermediate == g.output > 1:
            out[key("ffn", hidden=arch.hidden, ffn=arch.ffn, g=g.intermediate)] += 1
        else:
            out[key("inter", hidden=arch.hidden, ffn=arch.ffn, g=g.intermediate)] += 1
            out[key("out", hidden=arch.hidden, ffn=arch.ffn, g=g.output)] += 1
    return out


def _linear(cin: int, cout: int, g: int) -> GroupedLinear:
    conv = nn.Conv1d(cin, cout, 1, groups=g)
    return GroupedLinear(conv.weight, torch.zeros(cout), g, "batched")


def _layer(hidden: int, heads: int, head_size: int, ffn: int, gq: int, gk: int, gp: int, gi: int, go: int) -> Layer:
    a = heads * head_size
    mats = {
        "q": _linear(hidden, a, gq),
        "k": _linear(hidden, a, gk),
        "v": _linear(hidden, a, gq),
        "post_attention": _linear(a, hidden, gp),
        "intermediate": _linear(hidden, ffn, gi),
        "output": _linear(ffn, hidden, go),
    }
    return Layer(mats, nn.LayerNorm(hidden), nn.LayerNorm(hidden), heads)


class _Part(nn.Module):
    """One method of a Layer as a module (what gets exported and timed)."""

    def __init__(self, layer: Layer, method: str) -> None:
        super().__init__()
        self.layer, self.method = layer, method

    def forward(self, *inputs: torch.Tensor) -> Any:
        if self.method == "project_one":
            return self.layer.project_one(self.layer.q, *inputs)
        return getattr(self.layer, self.method)(*inputs)


def block(name: str, seq: int, batch: int = 1) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The block as a module with random weights, and inputs of its shape."""
    torch.manual_seed(0)
    kind, s = parse(name)
    if kind == "base":  # the real embeddings, pooler and classifier of a model with no layer
        config = SqueezeBertConfig(
            hidden_size=s["hidden"], embedding_size=s["hidden"], num_hidden_layers=0, num_labels=s["labels"]
        )
        ids = torch.randint(1000, 2000, (batch, seq))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        return EncoderForInference(SqueezeBertForSequenceClassification(config).eval(), "batched"), inputs
    if kind == "attend":
        q = torch.randn(batch, s["heads"], seq, s["head_size"])
        layer = _layer(s["heads"] * s["head_size"], s["heads"], s["head_size"], 4, 1, 1, 1, 1, 1)
        return _Part(layer, "attend"), {"q": q, "k": q, "v": q, "mask": torch.zeros(batch, 1, 1, seq)}
    x = torch.randn(batch, seq, s["hidden"])
    if kind in ("ffn", "inter", "out"):
        g = s["g"]
        other = 1 if g > 1 else 2  # a different count keeps the FFN unfused for inter / out
        gi, go = (g, g) if kind == "ffn" else (g, other) if kind == "inter" else (other, g)
        layer = _layer(s["hidden"], 1, s["hidden"], s["ffn"], 1, 1, 1, gi, go)
        inputs = {"x": x} if kind != "out" else {"h": torch.randn(batch, seq, s["ffn"]), "x": x}
        return _Part(layer, KINDS[kind][1]), inputs
    heads, d, g = s["heads"], s["head_size"], s["g"]
    unfused = 1 if g > 1 else 2  # proj: K differs from Q, so Q is its own projection
    layer = _layer(s["hidden"], heads, d, 4, g, g if kind == "qkv" else unfused, g, 1, 1)
    inputs = {"x": x} if kind != "post" else {"ctx": torch.randn(batch, seq, heads * d), "x": x}
    return _Part(layer, KINDS[kind][1]), inputs
