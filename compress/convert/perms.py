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

import numpy as np
from scipy.optimize import linear_sum_assignment

from compress.convert.groups import MATRICES, Groups


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


def retained_energy(layers: list[dict], perms: Perms, groups: Groups, heads: int) -> list[dict[str, float]]:
    """Per layer and matrix: fraction of the dense weight energy kept by the grouped blocks."""
    out = []
    for i, L in enumerate(layers):
        d = L["q"].shape[0] // heads
        hr, hid, ffn = head_rows(perms.heads[i], d), perms.hidden, perms.ffn[i]
        order = {"q": (hr, hid), "k": (hr, hid), "v": (hr, hid), "post_attention": (hid, hr), "intermediate": (ffn, hid), "output": (hid, ffn)}
        out.append({m: _block_energy(L[m].numpy(), *order[m], getattr(groups, m)) for m in MATRICES})
    return out


def search_perms(layers: list[dict], groups: Groups, heads: int, iterations: int = 4) -> Perms:
    """Alternating exact assignments of heads/FFN channels (given hidden) and hidden (given the rest)."""
    H, F = layers[0]["q"].shape[1], layers[0]["intermediate"].shape[0]
    d = H // heads
    g = groups.as_dict()
    # Energies normalized per matrix so every matrix of every layer counts the same.
    E = [{m: (L[m].numpy() ** 2) / max(float((L[m] ** 2).sum()), 1e-30) for m in MATRICES} for L in layers]
    hc = _chunks(list(g.values()), H)
    head_ok = all(heads % g[m] == 0 for m in ("q", "k", "v", "post_attention"))
    fc = _chunks([g["intermediate"], g["output"]], F)
    perms = identity_perms(H, heads, F, len(layers))
    if hc == 1 and fc == 1 and not head_ok:
        return perms

    def group_of(chunk_count: int, gm: int) -> np.ndarray:  # fine chunk -> group index of matrix
        return np.arange(chunk_count) // (chunk_count // gm)

    for _ in range(iterations):
        hid_chunk = np.empty(H, dtype=np.int64)
        hid_chunk[perms.hidden] = np.arange(H) // (H // hc)
        for i, e in enumerate(E):
            if head_ok:  # heads: score[head, slot]
                slot_score = np.zeros((heads, heads))
                for m in ("q", "k", "v", "post_attention"):
                    if g[m] == 1:
                        continue
                    per_head = e[m].reshape(heads, d, H).sum(1) if m != "post_attention" else e[m].reshape(H, heads, d).sum(2).T
                    hg = np.zeros((heads, g[m]))  # energy of head h against each hidden group of m
                    for j in range(g[m]):
                        hg[:, j] = per_head[:, group_of(hc, g[m])[hid_chunk] == j].sum(1)
                    slot_score += hg[:, np.arange(heads) // (heads // g[m])]
                perms.heads[i] = _order(_assign(slot_score))
            if fc > 1:  # FFN channels: score[channel, chunk]
                score = np.zeros((F, fc))
                for m, gm in (("intermediate", g["intermediate"]), ("output", g["output"])):
                    if gm == 1:
                        continue
                    per_ch = e[m] if m == "intermediate" else e[m].T  # [F, H]
                    cg = np.stack([per_ch[:, group_of(hc, gm)[hid_chunk] == j].sum(1) for j in range(gm)], 1)
                    score += cg[:, group_of(fc, gm)]
                perms.ffn[i] = _order(_assign(score))
        if hc > 1:  # hidden channels: score[channel, chunk], summed over layers
            score = np.zeros((H, hc))
            for i, e in enumerate(E):
                slot_of_row = np.empty(H, dtype=np.int64)
                slot_of_row[head_rows(perms.heads[i], d)] = np.arange(H)
                ffn_pos = np.empty(F, dtype=np.int64)
                ffn_pos[perms.ffn[i]] = np.arange(F)
                for m in MATRICES:
                    gm = g[m]
                    if gm == 1:
                        continue
                    if m in ("q", "k", "v"):
                        w, pos, n = e[m].T, slot_of_row, H  # rows of w: hidden channels; cols: other side
                    elif m == "post_attention":
                        w, pos, n = e[m], slot_of_row, H
                    elif m == "intermediate":
                        w, pos, n = e[m].T, ffn_pos, F
                    else:
                        w, pos, n = e[m], ffn_pos, F
                    other_group = pos // (n // gm)
                    cg = np.stack([w[:, other_group == j].sum(1) for j in range(gm)], 1)
                    score += cg[:, group_of(hc, gm)]
            perms.hidden = _order(_assign(score))
    return perms
