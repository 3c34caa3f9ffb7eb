"""An inference form of BERT and SqueezeBERT classifiers, built for ONNX Runtime and int8.

transformers' SqueezeBERT runs the encoder in [batch, channels, seq] layout with grouped Conv1d. ONNX
Runtime's int8 path turns a grouped Conv into ConvInteger, which is slower than fp32, and torch's
dynamic quantization skips Conv1d entirely. Here every 1x1 convolution becomes what it is
mathematically, a block-diagonal matrix product, expressed as MatMuls in [batch, seq, channels] layout:
int8 MatMul kernels apply, and the transposes between layouts disappear. The same module also
represents a plain BERT (all groups = 1), so teacher and students go through one exporter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from compress.core.errors import CompressError
from compress.modeling.heads import head_of

# Bumped whenever an exported graph changes for the same model: latency models timed on the old graphs recalibrate.
# 2: dense Q/K/V unfused where the target's runtime prefers it (`Layer`); 3: OpenVINO int8 keeps the head fp32
FORM_VERSION = 3


class GroupedLinear(nn.Module):
    """y = x @ blockdiag(W_1..W_g) + b on [B, L, C]; equal to a grouped 1x1 Conv1d on [B, C, L].

    `split` mode holds one nn.Linear per group: each exports as a 2-D MatMul that ONNX Runtime quantizes
    to a fused int8 MatMul, and torch's dynamic quantization (which skips Conv1d) converts them too.
    `batched` mode runs one batched MatMul over a [g, C/g, O/g] weight.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, groups: int, mode: str = "split"):
        super().__init__()
        out_features = weight.shape[0]
        w = weight.detach().reshape(out_features, -1)  # conv [O, C/g, 1] or linear [O, C] (g = 1)
        self.groups, self.mode = groups, mode
        self.in_per_group, self.out_per_group = w.shape[1], out_features // groups
        if mode == "split" or groups == 1:
            self.parts = nn.ModuleList()
            for j in range(groups):  # block j maps input channels j*C/g.. to output channels j*O/g..
                rows = slice(j * self.out_per_group, (j + 1) * self.out_per_group)
                part = nn.Linear(self.in_per_group, self.out_per_group)
                part.weight.data.copy_(w[rows])
                part.bias.data.copy_(bias.detach()[rows])
                self.parts.append(part.requires_grad_(False))
        elif mode == "batched":
            blocks = w.reshape(groups, self.out_per_group, self.in_per_group).transpose(1, 2).contiguous()
            self.weight = nn.Parameter(blocks, requires_grad=False)  # [g, C/g, O/g]
            self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        else:
            raise ValueError(f"mode {mode!r}: use split or batched")

    def blocks(self) -> torch.Tensor:
        """The weight as [g, C/g, O/g] blocks, whichever mode holds it (for the fused modules)."""
        if self.mode == "batched" and self.groups > 1:
            return self.weight.detach()
        return torch.stack([p.weight.detach().T for p in self.linears()])

    def full_bias(self) -> torch.Tensor:
        """The bias over all O output channels."""
        if self.mode == "batched" and self.groups > 1:
            return self.bias.detach()
        return torch.cat([p.bias.detach() for p in self.linears()])

    def linears(self) -> list[nn.Linear]:
        """The per-group Linears of split mode (or of one group)."""
        return [p for p in self.parts if isinstance(p, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return self.parts[0](x)
        if self.mode == "split":
            c = self.in_per_group
            return torch.cat([part(x[..., j * c : (j + 1) * c]) for j, part in enumerate(self.parts)], dim=-1)
        b, l, _ = x.shape
        y = torch.matmul(x.reshape(b, l, self.groups, self.in_per_group).transpose(1, 2), self.weight)  # [B, g, L, O/g]
        return y.transpose(1, 2).reshape(b, l, self.groups * self.out_per_group) + self.bias


class FusedQKV(nn.Module):
    """Q, K and V (same group count g, g dividing the heads) as ONE MatMul that lands in head layout.

    Group j of each projection holds heads j*A/g .. (j+1)*A/g - 1, so the grouped result reshapes straight
    to [B, A, L, d] without going back through [B, L, C]: one input quantization instead of three, and no
    per-projection transposes.
    """

    def __init__(self, q: GroupedLinear, k: GroupedLinear, v: GroupedLinear, heads: int):
        super().__init__()
        g = q.groups
        self.groups, self.heads, self.cin = g, heads, q.in_per_group
        self.d = g * q.out_per_group // heads  # head size (attention width may be below hidden after head pruning)
        w = [m.blocks() for m in (q, k, v)]  # each [g, C/g, O/g]
        self.weight = nn.Parameter(
            torch.cat(w, dim=2).squeeze(0) if g == 1 else torch.cat(w, dim=2), requires_grad=False
        )
        b = torch.stack([m.full_bias().reshape(g, -1) for m in (q, k, v)], dim=1)  # [g, 3, O/g]
        self.bias = nn.Parameter(b.reshape(g, 1, -1) if g > 1 else b.reshape(-1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, l, _c = x.shape
        a, g, d = self.heads, self.groups, self.d
        if g == 1:
            # [3, B, A, L, d]
            y = (torch.matmul(x, self.weight) + self.bias).reshape(b, l, 3, a, d).permute(2, 0, 3, 1, 4)
        else:
            y = torch.matmul(x.reshape(b, l, g, self.cin).transpose(1, 2), self.weight) + self.bias  # [B, g, L, 3*O/g]
            y = y.reshape(b, g, l, 3, a // g, d).permute(3, 0, 1, 4, 2, 5).reshape(3, b, a, l, d)
        return y[0], y[1], y[2]


class FusedFFN(nn.Module):
    """Intermediate -> GELU -> output with the same group count g, staying in [B, g, L, C/g] throughout.

    Group j of the intermediate output is exactly group j of the output conv's input, so the FFN needs
    one layout change in and one out instead of two each.
    """

    def __init__(self, inter: GroupedLinear, out: GroupedLinear):
        super().__init__()
        g = inter.groups
        self.groups, self.cin = g, inter.in_per_group
        self.w_in = nn.Parameter(inter.blocks(), requires_grad=False)  # [g, C/g, F/g]
        self.b_in = nn.Parameter(inter.full_bias().reshape(g, 1, -1), requires_grad=False)
        self.w_out = nn.Parameter(out.blocks(), requires_grad=False)  # [g, F/g, C/g]
        self.b_out = nn.Parameter(out.full_bias().reshape(g, 1, -1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, l, c = x.shape
        h = F.gelu(torch.matmul(x.reshape(b, l, self.groups, self.cin).transpose(1, 2), self.w_in) + self.b_in)
        y = torch.matmul(h, self.w_out) + self.b_out  # [B, g, L, C/g]
        return y.transpose(1, 2).reshape(b, l, c)


class Layer(nn.Module):
    """One encoder layer. `fuse_dense_qkv`: whether Q, K and V with one group each run as one FusedQKV MatMul (one
    5-D permute into head layout) or as three MatMuls, each reshaped and transposed on its own (the 4-D [0, 2, 1, 3]
    transposes OpenVINO folds into its attention kernel). Grouped Q/K/V always fuse (measured faster in both)."""

    def __init__(
        self,
        mats: dict[str, GroupedLinear],
        ln1: nn.LayerNorm,
        ln2: nn.LayerNorm,
        heads: int,
        fuse_dense_qkv: bool = True,
    ):
        super().__init__()
        q, k, v = mats["q"], mats["k"], mats["v"]
        # Fused only in batched mode: split mode keeps nn.Linear parts so torch's dynamic quantization sees them.
        fusable = q.mode == "batched" and q.groups == k.groups == v.groups and heads % q.groups == 0
        fusable = fusable and (q.groups > 1 or fuse_dense_qkv)
        self.qkv = FusedQKV(q, k, v, heads) if fusable else None
        if not fusable:
            self.q, self.k, self.v = q, k, v
        inter, out = mats["intermediate"], mats["output"]
        ffn_fusable = inter.mode == "batched" and inter.groups == out.groups > 1
        self.ffn = FusedFFN(inter, out) if ffn_fusable else None
        if not ffn_fusable:
            self.inter, self.out = inter, out
        self.post = mats["post_attention"]
        self.ln1, self.ln2, self.heads = ln1, ln2, heads
        self.d = q.groups * q.out_per_group // heads  # head size; heads * d < hidden once heads are pruned

    # The parts of a layer, each a method so the latency model can time exactly what ships (deploy/blocks.py).
    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V in head layout [B, A, L, d]."""
        if self.qkv is not None:
            return self.qkv(x)
        return self.project_one(self.q, x), self.project_one(self.k, x), self.project_one(self.v, x)

    def project_one(self, lin: GroupedLinear, x: torch.Tensor) -> torch.Tensor:
        b, l, _ = x.shape
        return lin(x).reshape(b, l, self.heads, self.d).transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scaled dot-product attention; the context back in [B, L, A*d]."""
        b, _, l, d = q.shape
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d) + mask
        return torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, l, self.heads * d)

    def post_attention(self, ctx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.ln1(self.post(ctx) + x)

    def intermediate(self, x: torch.Tensor) -> torch.Tensor:
        """The unfused FFN's first half: GELU(intermediate(x))."""
        return F.gelu(self.inter(x))

    def output(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The unfused FFN's second half with the residual and layer norm."""
        return self.ln2(self.out(h) + x)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ffn is not None:
            return self.ln2(self.ffn(x) + x)
        return self.output(self.intermediate(x), x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.project(x)
        return self.feed_forward(self.post_attention(self.attend(q, k, v, mask), x))


class EncoderForInference(nn.Module):
    """BERT / SqueezeBERT with a task head: (input_ids, attention_mask, token_type_ids) -> logits
    ([batch, labels] for a sequence head, [batch, seq, labels] for a per-token head)."""

    def __init__(self, model, mode: str = "split", fuse_dense_qkv: bool = True):
        super().__init__()
        c = model.config
        if c.model_type == "squeezebert":
            base, layers = model.transformer, []
            for L in base.encoder.layers:
                mats = {
                    "q": GroupedLinear(L.attention.query.weight, L.attention.query.bias, c.q_groups, mode),
                    "k": GroupedLinear(L.attention.key.weight, L.attention.key.bias, c.k_groups, mode),
                    "v": GroupedLinear(L.attention.value.weight, L.attention.value.bias, c.v_groups, mode),
                    "post_attention": GroupedLinear(
                        L.post_attention.conv1d.weight, L.post_attention.conv1d.bias, c.post_attention_groups, mode
                    ),
                    "intermediate": GroupedLinear(
                        L.intermediate.conv1d.weight, L.intermediate.conv1d.bias, c.intermediate_groups, mode
                    ),
                    "output": GroupedLinear(L.output.conv1d.weight, L.output.conv1d.bias, c.output_groups, mode),
                }
                layers.append(
                    Layer(
                        mats,
                        _ln(L.post_attention.layernorm),
                        _ln(L.output.layernorm),
                        L.attention.num_attention_heads,  # per layer: pruned heads (compress.modeling.squeezebert)
                        fuse_dense_qkv,
                    )
                )
        elif c.model_type == "bert":
            base, layers = model.bert, []
            for L in base.encoder.layer:
                a = L.attention
                lin = lambda m: GroupedLinear(m.weight, m.bias, 1, mode)
                mats = {
                    "q": lin(a.self.query),
                    "k": lin(a.self.key),
                    "v": lin(a.self.value),
                    "post_attention": lin(a.output.dense),
                    "intermediate": lin(L.intermediate.dense),
                    "output": lin(L.output.dense),
                }
                # heads per layer from the module: transformers' prune_heads leaves layers with different head counts
                heads = a.self.num_attention_heads
                layers.append(Layer(mats, _ln(a.output.LayerNorm), _ln(L.output.LayerNorm), heads, fuse_dense_qkv))
        else:
            raise ValueError(f"no inference form for model_type {c.model_type!r}")
        if c.hidden_act not in ("gelu", "gelu_python"):
            raise ValueError(f"inference form implements exact GELU, model uses {c.hidden_act!r}")
        self.embeddings = base.embeddings
        self.layers = nn.ModuleList(layers)
        head = head_of(model)
        self.per_token = not head.pooled
        self.pooler = None if self.per_token else base.pooler.dense
        self.classifier = getattr(model, head.module)
        self.eval()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        x = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask)
        if self.pooler is None:
            return self.classifier(x)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


def inference_form(model: nn.Module, mode: str = "batched", fuse_dense_qkv: bool = True) -> EncoderForInference:
    """`model` in the inference form for an exporter (on the CPU, eval mode), or one line saying what it supports."""
    try:
        return EncoderForInference(model.cpu().eval(), mode, fuse_dense_qkv).eval()
    except ValueError as e:
        raise CompressError(
            f"cannot export: {e}; export supports BERT and SqueezeBERT with sequence or token heads"
        ) from e


def _ln(norm: nn.LayerNorm) -> nn.LayerNorm:
    """A plain LayerNorm over the last dim with the same parameters (SqueezeBERT's permutes to NCW)."""
    out = nn.LayerNorm(norm.normalized_shape, eps=norm.eps)
    out.load_state_dict({"weight": norm.weight.detach(), "bias": norm.bias.detach()})
    return out
