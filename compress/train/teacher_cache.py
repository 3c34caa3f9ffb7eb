"""Teacher outputs over the training set, computed once and cached on disk.

Distilling several students (a search runs dozens) should not rerun the teacher every epoch of every
student. The teacher is deterministic in eval mode, so its logits, and the hidden states / attention
maps a loss asks for, are stored in a safetensors file keyed by (teacher weights hash, token content
hash, which outputs). A file whose recorded key or checksum does not match is rebuilt, never used.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from compress.core.atomic import atomic_path, atomic_write_text
from compress.core.hashing import file_sha256, stable_hash, state_dict_hash
from compress.data.encoding import MODEL_INPUTS, Encoded, batches, by_length, num_batches
from compress.modeling.heads import head_of, logits_of
from compress.train.loop import progress

log = logging.getLogger(__name__)


@dataclass
class TeacherOutputs:
    """Per-example teacher outputs; hidden states and attention maps are ragged (no padding stored)."""

    logits: torch.Tensor  # [n, labels] float32; a per-token head: [tokens, labels], ragged like `hidden`
    token_offsets: torch.Tensor  # [n + 1], from the encoding
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # hidden-state index -> [tokens, H] fp16
    attention: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> flat [sum heads*l*l] fp16
    attention_offsets: torch.Tensor | None = None
    heads: int = 0
    per_token: bool = False

    def batch(self, index: torch.Tensor, width: int) -> dict:
        """Outputs for the examples `index`, padded to `width` tokens like the student's batch."""
        idx = index.cpu()
        starts, ends = self.token_offsets[idx].tolist(), self.token_offsets[idx + 1].tolist()

        def padded(flat: torch.Tensor) -> torch.Tensor:
            pad = flat.new_zeros((len(idx), width, flat.shape[1]))
            for r, (s, e) in enumerate(zip(starts, ends, strict=True)):
                pad[r, : e - s] = flat[s:e]
            return pad.float()

        out: dict = {
            "logits": padded(self.logits) if self.per_token else self.logits[idx],
            "hidden": {},
            "attention": {},
        }
        for h, flat in self.hidden.items():
            out["hidden"][h] = padded(flat)
        for layer, flat in self.attention.items():
            assert self.attention_offsets is not None  # stored with every attention map
            pad = flat.new_zeros((len(idx), self.heads, width, width))
            for r, i in enumerate(idx.tolist()):
                n = int(self.token_offsets[i + 1] - self.token_offsets[i])
                a = flat[self.attention_offsets[i] : self.attention_offsets[i + 1]].view(self.heads, n, n)
                pad[r, :, :n, :n] = a
            out["attention"][layer] = pad.float()
        return out

    def select(self, idx: np.ndarray) -> TeacherOutputs:
        """The outputs of examples `idx`, in that order (a subset of the split they were computed on)."""
        idx = np.asarray(idx, dtype=np.int64)
        tokens = _ranges(self.token_offsets, idx)
        attention = {}
        offsets = None
        if self.attention:
            assert self.attention_offsets is not None
            cells = _ranges(self.attention_offsets, idx)
            attention = {k: v[cells] for k, v in self.attention.items()}
            offsets = _offsets(np.diff(self.attention_offsets.numpy())[idx])
        return TeacherOutputs(
            self.logits[tokens] if self.per_token else self.logits[idx],
            _offsets(np.diff(self.token_offsets.numpy())[idx]),
            {k: v[tokens] for k, v in self.hidden.items()},
            attention,
            offsets,
            self.heads,
            self.per_token,
        )

    def concat(self, other: TeacherOutputs) -> TeacherOutputs:
        """These examples followed by `other`'s (the same outputs must have been computed for both)."""
        shift = lambda a, b: torch.cat([a, b[1:] + a[-1]])
        offsets = (
            shift(self.attention_offsets, other.attention_offsets)
            if self.attention_offsets is not None and other.attention_offsets is not None
            else None
        )
        return TeacherOutputs(
            torch.cat([self.logits, other.logits]),
            shift(self.token_offsets, other.token_offsets),
            {k: torch.cat([v, other.hidden[k]]) for k, v in self.hidden.items()},
            {k: torch.cat([v, other.attention[k]]) for k, v in self.attention.items()},
            offsets,
            self.heads,
            self.per_token,
        )


def _ranges(offsets: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """Flat positions of the ragged rows `idx` under `offsets`."""
    o = offsets.numpy()
    parts = [np.arange(o[i], o[i + 1]) for i in idx]
    return torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))


def _offsets(lengths: np.ndarray) -> torch.Tensor:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    out[1:] = np.cumsum(lengths)
    return torch.from_numpy(out)


def cache_key(teacher_hash: str, enc: Encoded, hidden: list[int], attention: list[int], head: str = "sequence") -> str:
    return stable_hash(
        {
            "teacher": teacher_hash,
            "head": head,
            "tokens": enc.key,
            "hidden": sorted(hidden),
            "attention": sorted(attention),
        }
    )


@torch.no_grad()
def compute(
    teacher, enc: Encoded, device: torch.device, hidden: list[int], attention: list[int], batch_size: int = 64
) -> TeacherOutputs:
    teacher.eval().to(device)
    n, lengths = len(enc), enc.lengths()
    heads = teacher.config.num_attention_heads
    per_token = not head_of(teacher).pooled
    logits = torch.zeros(int(enc.offsets[-1]) if per_token else n, teacher.config.num_labels)
    hid = {h: torch.zeros(int(enc.offsets[-1]), teacher.config.hidden_size, dtype=torch.float16) for h in hidden}
    att_off = torch.zeros(n + 1, dtype=torch.int64)
    att_off[1:] = torch.cumsum(torch.from_numpy(heads * lengths.astype("int64") ** 2), 0)
    att = {a: torch.zeros(int(att_off[-1]), dtype=torch.float16) for a in attention}
    with progress() as bar:
        task = bar.add_task("teacher outputs", total=num_batches(enc, batch_size), info="")
        for b in batches(enc, batch_size, by_length(enc)):
            o = teacher(
                *(b[k].to(device) for k in MODEL_INPUTS),
                output_hidden_states=bool(hidden),
                output_attentions=bool(attention),
            )
            if not per_token:
                logits[b["index"]] = logits_of(o).float().cpu()
            for r, i in enumerate(b["index"].tolist()):
                s, e, ln = int(enc.offsets[i]), int(enc.offsets[i + 1]), int(lengths[i])
                if per_token:
                    logits[s:e] = logits_of(o)[r, :ln].float().cpu()
                for h in hidden:
                    hid[h][s:e] = o.hidden_states[h][r, :ln].half().cpu()
                for a in attention:
                    att[a][att_off[i] : att_off[i + 1]] = o.attentions[a][r, :, :ln, :ln].reshape(-1).half().cpu()
            bar.update(task, advance=1)
    return TeacherOutputs(logits, torch.from_numpy(enc.offsets), hid, att, att_off, heads, per_token)


def load_or_compute(
    teacher, enc: Encoded, device: torch.device, cache_dir: Path, hidden: list[int], attention: list[int]
) -> tuple[TeacherOutputs, str]:
    """Cached teacher outputs; returns (outputs, 'hit' | 'miss' | 'rebuilt: <why>')."""
    head = head_of(teacher)
    key = cache_key(state_dict_hash(teacher), enc, hidden, attention, head.name)
    path = Path(cache_dir) / "teacher_outputs" / f"{key}.safetensors"
    status = "miss"
    if path.exists():
        try:
            out = _load(path, key, enc, hidden, attention, teacher.config.num_attention_heads, not head.pooled)
            log.info("teacher outputs reused from cache %s", path.name)
            return out, "hit"
        except ValueError as e:
            status = f"rebuilt: {e}"
            log.warning("teacher output cache %s rejected (%s); recomputing", path.name, e)
    out = compute(teacher, enc, device, hidden, attention)
    tensors = {"logits": out.logits, "token_offsets": out.token_offsets}
    tensors |= {f"hidden.{h}": t for h, t in out.hidden.items()} | {
        f"attention.{a}": t for a, t in out.attention.items()
    }
    if out.attention_offsets is not None:
        tensors["attention_offsets"] = out.attention_offsets
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"key": key})
        checksum = file_sha256(tmp)
    atomic_write_text(path.with_suffix(".json"), json.dumps({"key": key, "sha256": checksum}))
    # Attention maps grow with the square of the length: pair tasks at 128 tokens cost ~0.4 MB per example and layer
    log.info("teacher outputs cached: %s (%.2f GB)", path, path.stat().st_size / 1e9)
    return out, status


def _load(
    path: Path, key: str, enc: Encoded, hidden: list[int], attention: list[int], heads: int, per_token: bool
) -> TeacherOutputs:
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"missing or unreadable {meta_path.name}") from e
    if meta.get("key") != key:
        raise ValueError("recorded key does not match this teacher/data")
    if file_sha256(path) != meta.get("sha256"):
        raise ValueError("checksum mismatch (corrupt file)")
    try:
        t = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"unreadable ({e})") from e
    if t["logits"].shape[0] != (int(enc.offsets[-1]) if per_token else len(enc)) or not torch.equal(
        t["token_offsets"], torch.from_numpy(enc.offsets)
    ):
        raise ValueError("shape does not match the training data")
    return TeacherOutputs(
        t["logits"],
        t["token_offsets"],
        {h: t[f"hidden.{h}"] for h in hidden},
        {a: t[f"attention.{a}"] for a in attention},
        t.get("attention_offsets"),
        heads,
        per_token,
    )
