"""Narrower students: which FFN channels, residual channels and heads of the teacher a student keeps.

Each cut works on the dense layers (`build.dense_layers`) in place, before the permutation search and the block
fit, so everything after sees an ordinary (narrower) BERT layer. With the teacher's activation moments on task
text (`blockfit.collect_moments`) the scores are the energy lost without each channel or head; without them,
weight magnitudes.
"""

from __future__ import annotations

import torch

from compress.convert.blockfit import fit_columns, permute_moment


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


def narrow(
    layers: list[dict[str, torch.Tensor]],
    embeddings_ln: tuple[torch.Tensor, torch.Tensor],
    heads: int,
    width: int,
    moments: list[dict] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Keep `width` residual channels and width/d heads per layer (in place); return (kept channels, kept heads per
    layer), each sorted, in the teacher's numbering.

    SqueezeBERT's attention is as wide as its residual stream, so both shrink together and the head size stays.
    Channel score: the residual stream's energy in that channel, summed over every place it is read - E[x_c^2] at
    the inputs of Q/K/V and of the FFN on task text (`moments`), or without text the energy each LayerNorm puts
    there (gamma_c^2 + beta_c^2). Head score: the energy a head writes through the post-attention matrix,
    E[|ctx_h|^2] |W_o[:, h]|^2 (without text: |W_v[h]| |W_o[:, h]|). Structured pruning by magnitude, as
    torch-pruning does, but across the coupled residual stream of every layer at once and with the least-squares
    block fit of the grouped conversion applied afterwards to the narrowed matrices.
    """
    hidden = layers[0]["q"].shape[1]
    d = hidden // heads
    if moments is not None:
        score = sum(m["hidden"].diagonal()[:-1] + m["ln1"].diagonal()[:-1] for m in moments).float()
    else:
        lns = [embeddings_ln, *((L[f"{k}_w"], L[f"{k}_b"]) for L in layers for k in ("ln1", "ln2"))]
        score = sum(w.float() ** 2 + b.float() ** 2 for w, b in lns)
    keep = torch.sort(torch.topk(score, width).indices).values
    kept_heads = []
    for i, L in enumerate(layers):
        wo = L["post_attention"].reshape(hidden, heads, d).pow(2).sum((0, 2))  # |W_o[:, h]|^2
        if moments is not None:
            ctx = moments[i]["context"].diagonal()[:-1].float().reshape(heads, d).sum(1)
            head_score = ctx * wo
        else:
            head_score = L["v"].reshape(heads, d, hidden).pow(2).sum((1, 2)).sqrt() * wo.sqrt()
        h = torch.sort(torch.topk(head_score, width // d).indices).values
        rows = (h[:, None] * d + torch.arange(d)).reshape(-1)
        for m in ("q", "k", "v"):
            L[m], L[f"{m}_b"] = L[m][rows][:, keep], L[f"{m}_b"][rows]
        L["post_attention"], L["post_attention_b"] = L["post_attention"][keep][:, rows], L["post_attention_b"][keep]
        L["intermediate"] = L["intermediate"][:, keep]
        L["output"], L["output_b"] = L["output"][keep], L["output_b"][keep]
        for k in ("ln1_w", "ln1_b", "ln2_w", "ln2_b"):
            L[k] = L[k][keep]
        if moments is not None:
            for key in ("hidden", "ln1"):
                moments[i][key] = permute_moment(moments[i][key], keep.numpy())
            moments[i]["context"] = permute_moment(moments[i]["context"], rows.numpy())
        kept_heads.append(h)
    return keep, kept_heads


def pooled_rows(pooler: torch.Tensor, classifier: torch.nn.Linear, width: int) -> torch.Tensor:
    """The pooler outputs a narrower student keeps (all of them at full width): those the classifier weighs most,
    |W_c[:, j]| |W_p[j]| (the pooler is as wide as the hidden state in transformers' configs)."""
    if width == pooler.shape[0]:
        return torch.arange(width)
    score = classifier.weight.norm(dim=0) * pooler.norm(dim=1)
    return torch.sort(torch.topk(score, width).indices).values
