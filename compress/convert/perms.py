"""Choosing which weights a grouped convolution keeps: a permutation search over BERT's symmetries.

BERT's function is unchanged by one permutation of the residual-stream channels (for the whole network),
and per layer by a permutation of the attention heads (shared by Q, K, V and the post-attention input)
and of the FFN channels. `search_perms` picks them to maximize the weight energy (sum of squares) inside
the kept blocks: alternating maximization where each step is an exact balanced assignment (scipy's
linear_sum_assignment) given the others, so the kept energy never decreases from the identity order.
How the kept blocks are then filled is `compress.convert.blockfit`'s job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from compress.core.groups import MATRICES, Groups


def _chunks(groups: list[int], size: int) -> int:
    """Finest chunking compatible with every group count > 1 (their lcm), or 1 if it does not divide size."""
    fine = math.lcm(*[g for g in groups if g > 1] or [1])
    return fine if size % fine == 0 else 1


def _assign(score: np.ndarray) -> np.ndarray:
    """Balanced assignment: score[item, chunk] -> chunk of each item, each chunk getting n/chunks items."""
    n, c = score.shape
    cols = np.repeat(score, n // c, axis=1)
    rows, picked = linear_sum_assignment(cols, maximize=True)
    chunk = np.empty(n, dtype=np.int64)
    chunk[rows] = picked // (n // c)
    return chunk


def _order(chunk: np.ndarray) -> np.ndarray:
    return np.argsort(chunk, kind="stable")


def _block_energy(w: np.ndarray, rows: np.ndarray, cols: np.ndarray, g: int) -> float:
    """Energy fraction inside the g diagonal blocks when rows/cols are placed in that order."""
    w = w[np.ix_(rows, cols)]
    ro, co = w.shape[0] // g, w.shape[1] // g
    kept = sum(float((w[j * ro : (j + 1) * ro, j * co : (j + 1) * co] ** 2).sum()) for j in range(g))
    return kept / max(float((w**2).sum()), 1e-30)


@dataclass
class Perms:
    hidden: np.ndarray  # new position -> old hidden channel
    heads: list[np.ndarray]  # per layer: slot -> old head
    ffn: list[np.ndarray]  # per layer: new position -> old FFN channel


def identity_perms(hidden: int, heads: int, ffn: int, n_layers: int) -> Perms:
    return Perms(np.arange(hidden), [np.arange(heads)] * n_layers, [np.arange(ffn)] * n_layers)


def head_rows(heads_order: np.ndarray, d: int) -> np.ndarray:
    return (heads_order[:, None] * d + np.arange(d)[None, :]).reshape(-1)


def matrix_orders(head_rows: Any, hidden: Any, ffn: Any) -> dict[str, tuple[Any, Any]]:
    """(row order, column order) of each of a layer's six matrices, from the head rows (Q/K/V outputs and the
    post-attention input), the residual-stream order and the FFN order."""
    return {
        "q": (head_rows, hidden),
        "k": (head_rows, hidden),
        "v": (head_rows, hidden),
        "post_attention": (hidden, head_rows),
        "intermediate": (ffn, hidden),
        "output": (hidden, ffn),
    }


def retained_energy(layers: list[dict], perms: Perms, groups: Groups, heads: int) -> list[dict[str, float]]:
    """Per layer and matrix: fraction of the dense weight energy kept by the grouped blocks."""
    out = []
    for i, L in enumerate(layers):
        d = L["q"].shape[0] // heads
        order = matrix_orders(head_rows(perms.heads[i], d), perms.hidden, perms.ffn[i])
        out.append({m: _block_energy(L[m].numpy(), *order[m], getattr(groups, m)) for m in MATRICES})
    return out


@dataclass(frozen=True)
class _Shape:
    """Sizes every step of the search shares: hidden H, heads, head size d, FFN F, fine chunk counts hc and fc of
    the hidden and FFN channels, and each matrix's group count g."""

    H: int
    heads: int
    d: int
    F: int
    hc: int
    fc: int
    g: dict[str, int]

    def group_of(self, chunk_count: int, gm: int) -> np.ndarray:
        """Fine chunk -> the group of a matrix with `gm` groups."""
        return np.arange(chunk_count) // (chunk_count // gm)


def search_perms(layers: list[dict], groups: Groups, heads: int, iterations: int = 4) -> Perms:
    """Alternating exact assignments of heads/FFN channels (given hidden) and hidden (given the rest)."""
    H, F = layers[0]["q"].shape[1], layers[0]["intermediate"].shape[0]
    g = groups.as_dict()
    shape = _Shape(
        H, heads, H // heads, F, _chunks(list(g.values()), H), _chunks([g["intermediate"], g["output"]], F), g
    )
    # Energies normalized per matrix so every matrix of every layer counts the same.
    E = [{m: (L[m].numpy() ** 2) / max(float((L[m] ** 2).sum()), 1e-30) for m in MATRICES} for L in layers]
    head_ok = all(heads % g[m] == 0 for m in ("q", "k", "v", "post_attention"))
    perms = identity_perms(H, heads, F, len(layers))
    if shape.hc == 1 and shape.fc == 1 and not head_ok:
        return perms
    for _ in range(iterations):
        hid_chunk = np.empty(H, dtype=np.int64)
        hid_chunk[perms.hidden] = np.arange(H) // (H // shape.hc)
        for i, e in enumerate(E):
            if head_ok:
                perms.heads[i] = _order(_assign(_head_scores(e, shape, hid_chunk)))
            if shape.fc > 1:
                perms.ffn[i] = _order(_assign(_ffn_scores(e, shape, hid_chunk)))
        if shape.hc > 1:
            perms.hidden = _order(_assign(_hidden_scores(E, shape, perms)))
    return perms


def _head_scores(e: dict[str, np.ndarray], shape: _Shape, hid_chunk: np.ndarray) -> np.ndarray:
    """score[head, slot]: the energy a head keeps in each slot, given the hidden channels' chunks."""
    heads, d, H, g = shape.heads, shape.d, shape.H, shape.g
    score = np.zeros((heads, heads))
    for m in ("q", "k", "v", "post_attention"):
        if g[m] == 1:
            continue
        per_head = e[m].reshape(heads, d, H).sum(1) if m != "post_attention" else e[m].reshape(H, heads, d).sum(2).T
        hidden_group = shape.group_of(shape.hc, g[m])[hid_chunk]
        hg = np.stack([per_head[:, hidden_group == j].sum(1) for j in range(g[m])], 1)  # head x hidden group
        score += hg[:, np.arange(heads) // (heads // g[m])]
    return score


def _ffn_scores(e: dict[str, np.ndarray], shape: _Shape, hid_chunk: np.ndarray) -> np.ndarray:
    """score[channel, chunk]: the energy an FFN channel keeps in each chunk, given the hidden channels' chunks."""
    score = np.zeros((shape.F, shape.fc))
    for m in ("intermediate", "output"):
        gm = shape.g[m]
        if gm == 1:
            continue
        per_ch = e[m] if m == "intermediate" else e[m].T  # [F, H]
        hidden_group = shape.group_of(shape.hc, gm)[hid_chunk]
        cg = np.stack([per_ch[:, hidden_group == j].sum(1) for j in range(gm)], 1)
        score += cg[:, shape.group_of(shape.fc, gm)]
    return score


def _hidden_scores(E: list[dict[str, np.ndarray]], shape: _Shape, perms: Perms) -> np.ndarray:
    """score[channel, chunk] of the residual-stream channels, summed over layers, given heads and FFN orders."""
    H, F = shape.H, shape.F
    score = np.zeros((H, shape.hc))
    for i, e in enumerate(E):
        slot_of_row = np.empty(H, dtype=np.int64)
        slot_of_row[head_rows(perms.heads[i], shape.d)] = np.arange(H)
        ffn_pos = np.empty(F, dtype=np.int64)
        ffn_pos[perms.ffn[i]] = np.arange(F)
        # per matrix: its energy with hidden channels as rows, and the other side's positions
        sides = {
            "q": (e["q"].T, slot_of_row, H),
            "k": (e["k"].T, slot_of_row, H),
            "v": (e["v"].T, slot_of_row, H),
            "post_attention": (e["post_attention"], slot_of_row, H),
            "intermediate": (e["intermediate"].T, ffn_pos, F),
            "output": (e["output"], ffn_pos, F),
        }
        for m, (w, pos, n) in sides.items():
            gm = shape.g[m]
            if gm == 1:
                continue
            other_group = pos // (n // gm)
            cg = np.stack([w[:, other_group == j].sum(1) for j in range(gm)], 1)
            score += cg[:, shape.group_of(shape.hc, gm)]
    return score
