"""BERT -> SqueezeBERT: the weight mapping and building the student.

A SqueezeBERT layer is a BERT layer whose position-wise dense layers are 1x1 convolutions. With one
group the conversion is exact (Linear [out, in] -> Conv1d [out, in, 1]; key renames). With g groups a
conv is a block-diagonal matrix: only g blocks of each dense matrix survive; `perms` decides which
(permutation search) and `blockfit` how to fill them (least-squares fit on activation statistics); `width` cuts
narrower students (FFN channels, residual channels and heads) before that.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, SqueezeBertConfig

from compress.convert.blockfit import collect_moments, fit_blocks, moment_for, permute_moment
from compress.convert.perms import (
    Perms,
    head_rows,
    identity_perms,
    matrix_orders,
    retained_energy,
    search_perms,
)
from compress.convert.width import narrow, pooled_rows, shrink_ffn
from compress.core.errors import CompressError
from compress.core.groups import MATRICES, Groups, check_groups
from compress.modeling.heads import head_of, model_class


def select_layers(num_layers: int, layers: int | list[int] | None) -> list[int]:
    """Teacher layers to keep. A count keeps evenly spaced layers ending with the last one."""
    if layers is None:
        return list(range(num_layers))
    if isinstance(layers, int):
        if not 1 <= layers <= num_layers:
            raise CompressError(
                f"layers={layers}: keep between 1 and {num_layers} layers (the teacher has {num_layers})"
            )
        return [round((i + 1) * num_layers / layers) - 1 for i in range(layers)]
    bad = [i for i in layers if not 0 <= i < num_layers]
    if not layers or bad or len(set(layers)) != len(layers):
        raise CompressError(
            f"layers={layers}: give distinct indices in 0..{num_layers - 1} (the teacher has {num_layers} layers)"
        )
    return sorted(layers)


def dense_layers(teacher, keep: list[int]) -> list[dict[str, torch.Tensor]]:
    """The kept BERT layers as plain tensors, named by SqueezeBERT's six matrices."""
    out = []
    for i in keep:
        L = teacher.bert.encoder.layer[i]
        a = L.attention
        out.append(
            {
                "q": a.self.query.weight,
                "q_b": a.self.query.bias,
                "k": a.self.key.weight,
                "k_b": a.self.key.bias,
                "v": a.self.value.weight,
                "v_b": a.self.value.bias,
                "post_attention": a.output.dense.weight,
                "post_attention_b": a.output.dense.bias,
                "ln1_w": a.output.LayerNorm.weight,
                "ln1_b": a.output.LayerNorm.bias,
                "intermediate": L.intermediate.dense.weight,
                "intermediate_b": L.intermediate.dense.bias,
                "output": L.output.dense.weight,
                "output_b": L.output.dense.bias,
                "ln2_w": L.output.LayerNorm.weight,
                "ln2_b": L.output.LayerNorm.bias,
            }
        )
    return [{k: v.detach().clone().float() for k, v in d.items()} for d in out]


# --- building the student -----------------------------------------------------------------------


def _grouped(w: torch.Tensor, g: int) -> torch.Tensor:
    """Diagonal blocks of a dense [out, in] matrix as a Conv1d weight [out, in/g, 1]."""
    o, i = w.shape[0] // g, w.shape[1] // g
    return torch.cat([w[j * o : (j + 1) * o, j * i : (j + 1) * i] for j in range(g)], 0).unsqueeze(-1).contiguous()


def student_config(
    teacher_config, n_layers: int, groups: Groups, ffn: int, hidden: int | None = None
) -> SqueezeBertConfig:
    """The student's transformers config: the teacher's settings, `hidden` channels (default the teacher's) and as
    many heads of the teacher's head size as fit in them."""
    c = teacher_config
    hidden = hidden or c.hidden_size
    return SqueezeBertConfig(
        vocab_size=c.vocab_size,
        hidden_size=hidden,
        embedding_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=hidden // (c.hidden_size // c.num_attention_heads),
        intermediate_size=ffn,
        hidden_act=c.hidden_act,
        hidden_dropout_prob=c.hidden_dropout_prob,
        attention_probs_dropout_prob=c.attention_probs_dropout_prob,
        max_position_embeddings=c.max_position_embeddings,
        type_vocab_size=c.type_vocab_size,
        initializer_range=c.initializer_range,
        layer_norm_eps=c.layer_norm_eps,
        pad_token_id=c.pad_token_id,
        num_labels=c.num_labels,
        id2label=c.id2label,
        label2id=c.label2id,
        problem_type=c.problem_type,
        q_groups=groups.q,
        k_groups=groups.k,
        v_groups=groups.v,
        post_attention_groups=groups.post_attention,
        intermediate_groups=groups.intermediate,
        output_groups=groups.output,
    )


@torch.no_grad()
def build_student(
    teacher,
    layers: list[dict],
    perms: Perms,
    groups: Groups,
    moments: list[dict] | None = None,
    kept: torch.Tensor | None = None,
) -> PreTrainedModel:
    """A SqueezeBERT with the teacher's head whose weights are the teacher's, reordered by `perms`, cut to the
    grouped blocks (least-squares fitted to the dense layer's output when activation `moments` are given).
    `kept`: the teacher's residual channels the (narrowed, `narrow`) layers hold, in order."""
    tc = teacher.config
    head = head_of(teacher)
    width = layers[0]["q"].shape[1]
    student = model_class(head.name, "squeezebert")(
        student_config(tc, len(layers), groups, layers[0]["intermediate"].shape[0], width)
    )
    hid = torch.from_numpy(perms.hidden)  # student channel -> channel of the narrowed layers
    teacher_hid = hid if kept is None else kept[hid]  # student channel -> teacher channel
    te, se = teacher.bert.embeddings, student.transformer.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        getattr(se, name).weight.copy_(getattr(te, name).weight[:, teacher_hid])
    se.LayerNorm.weight.copy_(te.LayerNorm.weight[teacher_hid])
    se.LayerNorm.bias.copy_(te.LayerNorm.bias[teacher_hid])
    d = tc.hidden_size // tc.num_attention_heads
    student_layers: list[Any] = list(student.transformer.encoder.layers)  # transformers' modules: attributes by name
    for i, (L, S) in enumerate(zip(layers, student_layers, strict=True)):
        hr, ffn = torch.from_numpy(head_rows(perms.heads[i], d)), torch.from_numpy(perms.ffn[i])
        rows = matrix_orders(hr, hid, ffn)
        convs = {
            "q": S.attention.query,
            "k": S.attention.key,
            "v": S.attention.value,
            "post_attention": S.post_attention.conv1d,
            "intermediate": S.intermediate.conv1d,
            "output": S.output.conv1d,
        }
        for m, (r, c) in rows.items():
            g, w, b = getattr(groups, m), L[m][r][:, c], L[f"{m}_b"][r]
            if g > 1 and moments is not None:
                w, b = fit_blocks(w, b, permute_moment(moments[i][moment_for(m)], c.numpy()), g)
                convs[m].weight.copy_(w)
            else:
                convs[m].weight.copy_(_grouped(w, g))
            convs[m].bias.copy_(b)
        for ln, key in ((S.post_attention.layernorm, "ln1"), (S.output.layernorm, "ln2")):
            ln.weight.copy_(L[f"{key}_w"][hid])
            ln.bias.copy_(L[f"{key}_b"][hid])
    t_head, s_head = getattr(teacher, head.module), getattr(student, head.module)
    if head.pooled:  # the pooler maps the permuted hidden order back, so the head's weights stay as they are
        pooled = pooled_rows(teacher.bert.pooler.dense.weight, t_head, width)
        student.transformer.pooler.dense.weight.copy_(teacher.bert.pooler.dense.weight[pooled][:, teacher_hid])
        student.transformer.pooler.dense.bias.copy_(teacher.bert.pooler.dense.bias[pooled])
        head_state = dict(t_head.state_dict())
        head_state["weight"] = head_state["weight"][:, pooled]
        s_head.load_state_dict(head_state)
    else:  # a per-token head reads the hidden state itself, in the student's (permuted) order
        s_head.weight.copy_(t_head.weight[:, teacher_hid])
        s_head.bias.copy_(t_head.bias)
    return student.eval()


def convert(
    teacher,
    layers: int | list[int] | None = None,
    groups: Groups | None = None,
    intermediate_size: int | None = None,
    init: str = "permuted",
    iterations: int = 3,
    calib_batches=None,
    hidden_size: int | None = None,
) -> tuple[PreTrainedModel, dict]:
    """BERT with a task head -> SqueezeBERT student with the same head, plus a report (layers, energy kept per layer).

    `calib_batches` (padded task batches) switch on the least-squares block fit for `permuted` init and the
    activation-based scores of `intermediate_size` and `hidden_size` (a narrower residual stream and attention:
    `narrow`).
    """
    tc = teacher.config
    groups = groups or Groups()
    if tc.model_type != "bert":
        raise CompressError(f"convert needs a BERT teacher, got model_type {tc.model_type!r}")
    keep = select_layers(tc.num_hidden_layers, layers)
    ffn = intermediate_size or tc.intermediate_size
    if not 1 <= ffn <= tc.intermediate_size:
        raise CompressError(f"intermediate_size={ffn}: must be between 1 and the teacher's {tc.intermediate_size}")
    d = tc.hidden_size // tc.num_attention_heads
    width = hidden_size or tc.hidden_size
    if width % d or not d <= width <= tc.hidden_size:
        raise CompressError(
            f"hidden_size={width}: use a multiple of the teacher's head size {d} up to its {tc.hidden_size} "
            f"(e.g. {', '.join(str(d * h) for h in range(tc.num_attention_heads, 0, -1)[:4])})"
        )
    heads = width // d
    try:
        check_groups(groups, width, ffn)
    except ValueError as e:
        raise CompressError(f"hidden_size {width}, heads {heads}: {e}" if width < tc.hidden_size else str(e)) from None
    if init not in ("permuted", "identity", "random"):
        raise CompressError(f"init={init!r}: use permuted, identity or random")
    if init == "random":
        student = model_class(head_of(teacher).name, "squeezebert")(student_config(tc, len(keep), groups, ffn, width))
        return student.eval(), {
            "layers": keep,
            "groups": groups.as_dict(),
            "intermediate_size": ffn,
            "hidden_size": width,
            "init": init,
        }
    dense = dense_layers(teacher, keep)
    grouped = any(g > 1 for g in groups.as_dict().values())
    shrink, thin = ffn < tc.intermediate_size, width < tc.hidden_size
    fit = init == "permuted" and (grouped or shrink or thin) and calib_batches is not None
    moments = collect_moments(teacher, keep, calib_batches) if fit else None
    channels, kept_heads = None, None
    if thin:
        emb = teacher.bert.embeddings.LayerNorm
        channels, kept_heads = narrow(
            dense, (emb.weight.detach(), emb.bias.detach()), tc.num_attention_heads, width, moments
        )
    if shrink:
        for i, L in enumerate(dense):
            shrink_ffn(L, ffn, moments[i] if moments else None)
    ident = identity_perms(width, heads, ffn, len(keep))
    perms = search_perms(dense, groups, heads, iterations) if init == "permuted" else ident
    kept = retained_energy(dense, perms, groups, heads)
    base = retained_energy(dense, ident, groups, heads) if init == "permuted" else kept
    mean = lambda rows: [float(np.mean([r[m] for m in MATRICES if getattr(groups, m) > 1] or [1.0])) for r in rows]
    report = {
        "layers": keep,
        "groups": groups.as_dict(),
        "intermediate_size": ffn,
        "hidden_size": width,
        "init": init,
        "least_squares_fit": moments is not None,
        "energy_kept_per_layer": mean(kept),
        "energy_kept_identity_per_layer": mean(base),
        "energy_kept_per_matrix": kept,
        # student channel / head -> the teacher's (the distillation losses line the teacher's targets up with them)
        "hidden_order": (perms.hidden if channels is None else channels.numpy()[perms.hidden]).tolist(),
        "head_orders": [
            (h if kept_heads is None else kept_heads[i].numpy()[h]).tolist() for i, h in enumerate(perms.heads)
        ],
    }
    return build_student(teacher, dense, perms, groups, moments, channels), report
