"""Content hashes: they key every cache, so a cache entry is reused only for exactly the same inputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from compress.core.atomic import json_default


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hash of a JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, default=json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_dict_hash(model: torch.nn.Module, n: int = 16) -> str:
    """Hash of a model's weights (names, shapes, dtypes, values): the identity of a teacher."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:n]
