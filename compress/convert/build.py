"""BERT -> SqueezeBERT: the weight mapping and building the student.

A SqueezeBERT layer is a BERT layer whose position-wise dense layers are 1x1 convolutions. With one
group the conversion is exact (Linear [out, in] -> Conv1d [out, in, 1]; key renames). With g groups a
conv is a block-diagonal matrix: only g blocks of each dense matrix survive; `perms` decides which
(permutation search) and `blockfit` how to fill them (least-squares fit on activation statistics).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, SqueezeBertConfig

from compress.convert.blockfit import (
    collect_moments,
    fit_blocks,
    fit_columns,
    moment_for,
    permute_moment,
)
from compress.convert.perms import (
    Perms,
    head_rows,
    identity_perms,
    matrix_orders,
    retained_energy,
    search_perms,
)
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


def shrink_ffn(layer: dict[str, torch.Tensor], size: int, moments: dict | None = None) -> None:
    """Keep `size` FFN channels (in place, original order).

    Without activation statistics: the largest |w_in| * |w_out| (weights only). With the teacher's `moments` on task
    text: the channels whose loss costs the least output energy, Var(a_j) |w_out_j|^2 (a channel's mean can be
    folded into the bias), and the output matrix and bias are refitted in least squares so the kept channels
    reproduce the full FFN's output. Importance-only pruning (torch-pruning's) leaves the kept weights as they are;
    the refit is what lets a student start from a narrow FFN close to the teacher's function.
    """
    A = moments.get("ffn") if moments is not None else None
    if A is None:
        score = layer["intermediate"].norm(dim=1) * layer["output"].norm(dim=0)
    else:
        mean, second = A[:-1, -1], A.diagonal()[:-1]
        score = (second - mean**2).clamp_min(0).float() * layer["output"].norm(dim=0) ** 2
    idx = torch.sort(torch.topk(score, size).indices).values
    if A is not None:
        wa = torch.cat([layer["output"], layer["output_b"][:, None]], 1).double()
        sol = fit_columns(wa, A, idx)
        layer["output"], layer["output_b"] = sol[:, :-1].float(), sol[:, -1].float()
        moments["ffn"] = permute_moment(A, idx.numpy())  # type: ignore[index]
    else:
        layer["output"] = layer["output"][:, idx]
    layer["intermediate"], layer["intermediate_b"] = layer["intermediate"][idx], layer["intermediate_b"][idx]


# --- building the student -----------------------------------------------------------------------


def _grouped(w: torch.Tensor, g: int) -> torch.Tensor:
    """Diagonal blocks of a dense [out, in] matrix as a Conv1d weight [out, in/g, 1]."""
    o, i = w.shape[0] // g, w.shape[1] // g
    return torch.cat([w[j * o : (j + 1) * o, j * i : (j + 1) * i] for j in range(g)], 0).unsqueeze(-1).contiguous()


def student_config(teacher_config, n_layers: int, groups: Groups, ffn: int) -> SqueezeBertConfig:
    c = teacher_config
    return SqueezeBertConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        embedding_size=c.hidden_size,
        num_hidden_layers=n_layers,
        num_attention_heads=c.num_attention_heads,
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
    teacher, layers: list[dict], perms: Perms, groups: Groups, moments: list[dict] | None = None
) -> PreTrainedModel:
    """A SqueezeBERT with the teacher's head whose weights are the teacher's, reordered by `perms`, cut to the
    grouped blocks (least-squares fitted to the dense layer's output when activation `moments` are given)."""
    tc = teacher.config
    head = head_of(teacher)
    student = model_class(head.name, "squeezebert")(
        student_config(tc, len(layers), groups, layers[0]["intermediate"].shape[0])
    )
    hid = torch.from_numpy(perms.hidden)
    te, se = teacher.bert.embeddings, student.transformer.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        getattr(se, name).weight.copy_(getattr(te, name).weight[:, hid])
    se.LayerNorm.weight.copy_(te.LayerNorm.weight[hid])
    se.LayerNorm.bias.copy_(te.LayerNorm.bias[hid])
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
        student.transformer.pooler.dense.weight.copy_(teacher.bert.pooler.dense.weight[:, hid])
        student.transformer.pooler.dense.bias.copy_(teacher.bert.pooler.dense.bias)
        s_head.load_state_dict(t_head.state_dict())
    else:  # a per-token head reads the hidden state itself, in the student's (permuted) order
        s_head.weight.copy_(t_head.weight[:, hid])
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
) -> tuple[PreTrainedModel, dict]:
    """BERT with a task head -> SqueezeBERT student with the same head, plus a report (layers, energy kept per layer).

    `calib_batches` (padded task batches) switch on the least-squares block fit for `permuted` init.
    """
    tc = teacher.config
    groups = groups or Groups()
    if tc.model_type != "bert":
        raise CompressError(f"convert needs a BERT teacher, got model_type {tc.model_type!r}")
    keep = select_layers(tc.num_hidden_layers, layers)
    ffn = intermediate_size or tc.intermediate_size
    if not 1 <= ffn <= tc.intermediate_size:
        raise CompressError(f"intermediate_size={ffn}: must be between 1 and the teacher's {tc.intermediate_size}")
    try:
        check_groups(groups, tc.hidden_size, ffn)
    except ValueError as e:
        raise CompressError(str(e)) from None
    if init not in ("permuted", "identity", "random"):
        raise CompressError(f"init={init!r}: use permuted, identity or random")
    if init == "random":
        student = model_class(head_of(teacher).name, "squeezebert")(student_config(tc, len(keep), groups, ffn)).eval()
        return student, {"layers": keep, "groups": groups.as_dict(), "intermediate_size": ffn, "init": init}
    dense = dense_layers(teacher, keep)
    grouped = any(g > 1 for g in groups.as_dict().values())
    shrink = ffn < tc.intermediate_size
    fit = init == "permuted" and (grouped or shrink) and calib_batches is not None
    moments = collect_moments(teacher, keep, calib_batches) if fit else None
    if shrink:
        for i, L in enumerate(dense):
            shrink_ffn(L, ffn, moments[i] if moments else None)
    ident = identity_perms(tc.hidden_size, tc.num_attention_heads, ffn, len(keep))
    perms = search_perms(dense, groups, tc.num_attention_heads, iterations) if init == "permuted" else ident
    kept = retained_energy(dense, perms, groups, tc.num_attention_heads)
    base = retained_energy(dense, ident, groups, tc.num_attention_heads) if init == "permuted" else kept
    mean = lambda rows: [float(np.mean([r[m] for m in MATRICES if getattr(groups, m) > 1] or [1.0])) for r in rows]
    report = {
        "layers": keep,
        "groups": groups.as_dict(),
        "intermediate_size": ffn,
        "init": init,
        "least_squares_fit": moments is not None,
        "energy_kept_per_layer": mean(kept),
        "energy_kept_identity_per_layer": mean(base),
        "energy_kept_per_matrix": kept,
        "hidden_order": perms.hidden.tolist(),
        "head_orders": [h.tolist() for h in perms.heads],
    }
    return build_student(teacher, dense, perms, groups, moments), report
