"""Filling the kept blocks of a grouped 1x1 convolution by least squares.

Cutting the off-diagonal blocks of a dense matrix drops their contribution. Given the second moments of
each matrix's inputs on a few task batches (`collect_moments`), `fit_blocks` re-solves each block (and the
bias) for the output of the *dense* matrix: the part of the dropped contribution that correlates with the
kept inputs is folded into the kept weights. (torch-pruning and optimum have no notion of this block
structure; this is ours.)
"""

from __future__ import annotations

import numpy as np
import torch

from compress.data.encoding import MODEL_INPUTS


@torch.no_grad()
def collect_moments(teacher, keep: list[int], batches) -> list[dict[str, torch.Tensor]]:
    """Per kept layer: uncentered second moments E[[x,1][x,1]^T] of the inputs of its matrices.

    Keys: `hidden` (input of Q, K, V), `context` (post-attention input), `ln1` (intermediate input),
    `ffn` (output-conv input, after GELU). Padding positions are excluded.
    """
    sums: list[dict[str, torch.Tensor]] = [{} for _ in keep]
    count = [0]
    mask_now: list[torch.Tensor] = []

    def hook(i: int, key: str):
        def fn(module, args):
            x = args[0][mask_now[0]].double().cpu()  # [tokens, C]
            x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
            sums[i][key] = sums[i].get(key, 0) + x.T @ x

        return fn

    handles = []
    for i, layer_idx in enumerate(keep):
        L = teacher.bert.encoder.layer[layer_idx]
        for module, key in (
            (L.attention.self.query, "hidden"),
            (L.attention.output.dense, "context"),
            (L.intermediate.dense, "ln1"),
            (L.output.dense, "ffn"),
        ):
            handles.append(module.register_forward_pre_hook(hook(i, key)))
    teacher.eval()
    device = next(teacher.parameters()).device
    try:
        for b in batches:
            b = {k: b[k].to(device) for k in MODEL_INPUTS}
            mask_now[:] = [b["attention_mask"].bool()]
            count[0] += int(b["attention_mask"].sum())
            teacher(**b)
    finally:
        for h in handles:
            h.remove()
    return [{k: v / count[0] for k, v in d.items()} for d in sums]


def moment_for(matrix: str) -> str:
    return {
        "q": "hidden",
        "k": "hidden",
        "v": "hidden",
        "post_attention": "context",
        "intermediate": "ln1",
        "output": "ffn",
    }[matrix]


def fit_columns(wa: torch.Tensor, moment: torch.Tensor, cols: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """[w' | b'] over input columns `cols` (the constant last) that best reproduce x -> wa [x, 1] in least squares:
    wa A[:, J] (A[J, J] + ridge)^-1 with J = cols plus the constant; `wa` [O, C+1] float64, `moment` A [(C+1),
    (C+1)]."""
    J = torch.cat([cols, torch.tensor([moment.shape[0] - 1])])
    AJ = moment[J][:, J]
    AJ = AJ + ridge * AJ.diagonal().mean() * torch.eye(len(J), dtype=AJ.dtype)
    return torch.linalg.solve(AJ, (wa @ moment[:, J]).T).T


def fit_blocks(
    w: torch.Tensor, b: torch.Tensor, moment: torch.Tensor, g: int, ridge: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks [O, C/g, 1] and bias [O] that best reproduce x -> w x + b in least squares.

    `w` [O, C] and `moment` [(C+1), (C+1)] (bias last) are already in the permuted channel order; output block j
    is fitted on group j's inputs (`fit_columns`).
    """
    O, C = w.shape
    o, c = O // g, C // g
    wa = torch.cat([w, b[:, None]], 1).double()
    blocks, bias = [], torch.empty(O, dtype=torch.float64)
    for j in range(g):
        sol = fit_columns(wa[j * o : (j + 1) * o], moment, torch.arange(j * c, (j + 1) * c), ridge)
        blocks.append(sol[:, :c])
        bias[j * o : (j + 1) * o] = sol[:, c]
    return torch.cat(blocks, 0).unsqueeze(-1).float(), bias.float()


def permute_moment(moment: torch.Tensor, order: np.ndarray) -> torch.Tensor:
    """Reorder the channel rows/columns of an augmented moment (the constant stays last)."""
    idx = torch.cat([torch.from_numpy(np.asarray(order)), torch.tensor([moment.shape[0] - 1])])
    return moment[idx][:, idx]
