"""Running a model on task batches: the one torch runner, and predictions over a whole split.

A runner is any callable from a padded batch (`MODEL_INPUTS` as int64 tensors) to logits (ndarray).
Torch modules, ONNX Runtime sessions (`compress.deploy.onnx.ort_runner`) and int8 forms all become one,
so evaluation, quantization checks and latency never care which runtime they measure.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from compress.data.encoding import MODEL_INPUTS, Encoded, batches, by_length
from compress.modeling.heads import logits_of

Batch = dict[str, torch.Tensor]
Runner = Callable[[Batch], np.ndarray]


def torch_runner(model: torch.nn.Module, device: torch.device | str = "cpu") -> Runner:
    """A transformers classifier or an inference form (positional inputs) as a runner returning logits."""
    model.eval().to(device)

    @torch.no_grad()
    def run(b: Batch) -> np.ndarray:
        out = model(*(b[k].to(device) for k in MODEL_INPUTS))
        return logits_of(out).float().cpu().numpy()

    return run


def predict_with(run: Runner, enc: Encoded, batch_size: int = 64) -> np.ndarray:
    """Logits from any runner in the split's order, batched longest-first to save padding: [n, num_labels], or
    for a per-token head ([batch, seq, labels] out) flat over the split's tokens, [total_tokens, num_labels]."""
    out: np.ndarray | None = None
    for b in batches(enc, batch_size, by_length(enc)):
        logits = run(b)
        if out is None:
            out = np.zeros((int(enc.offsets[-1]) if logits.ndim == 3 else len(enc), logits.shape[-1]), dtype=np.float32)
        if logits.ndim == 3:
            for r, i in enumerate(b["index"].tolist()):
                s, e = enc.offsets[i], enc.offsets[i + 1]
                out[s:e] = logits[r, : e - s]
        else:
            out[b["index"].numpy()] = logits
    assert out is not None, "predict_with needs at least one example"
    return out


def predict(
    model: torch.nn.Module, enc: Encoded, device: torch.device | str = "cpu", batch_size: int = 64
) -> np.ndarray:
    """Logits of a torch model over a split."""
    return predict_with(torch_runner(model, device), enc, batch_size)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
