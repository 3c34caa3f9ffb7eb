"""Analytic FLOPs of BERT and SqueezeBERT encoders, so achieved GFLOP/s shows how far a runtime is from the hardware."""

from __future__ import annotations

from typing import Any

from compress.core.groups import Groups


def flops_per_sequence(config: Any, seq: int) -> float:
    """Multiply-adds x 2 of the encoder + head for one sequence (embedding lookups excluded).

    Grouped convolutions divide the dense cost by their group count; pruned heads (config.pruned_heads)
    narrow that layer's attention width; a pruned FFN shows in config.intermediate_size."""
    H, F, L = config.hidden_size, config.intermediate_size, seq
    g = Groups.of(config)
    pruned = getattr(config, "pruned_heads", None) or {}
    head_dim = H // config.num_attention_heads
    total = 0.0
    for i in range(config.num_hidden_layers):
        A = (config.num_attention_heads - len(pruned.get(i, pruned.get(str(i), [])))) * head_dim  # attention width
        dense = (
            2
            * L
            * (
                H * A * (1 / g.q + 1 / g.k + 1 / g.v + 1 / g.post_attention)
                + H * F * (1 / g.intermediate + 1 / g.output)
            )
        )
        total += dense + 2 * 2 * L * L * A  # + scores and weighted sum
    return total + 2 * (H * H + H * config.num_labels)
