"""Structured pruning (whole heads, FFN channels) of the teacher or a student; see compress/prune/."""

from __future__ import annotations

import copy
import logging
from typing import Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt
from transformers import PreTrainedModel

from compress.core.arch import Architecture
from compress.core.errors import CompressError
from compress.core.records import Conversion
from compress.data.encoding import MODEL_INPUTS, Encoded, batches
from compress.deploy.flops import flops_per_sequence
from compress.modeling.runners import count_parameters, predict
from compress.modeling.squeezebert import check_heads_divisible, head_segments
from compress.pipeline.registry import Pass, PassConfig
from compress.pipeline.state import RunState
from compress.prune.ffn import prune_bert_ffn, prune_squeezebert_ffn
from compress.prune.heads import original_heads, plan_heads
from compress.prune.importance import accumulate_gradients, head_scores

log = logging.getLogger(__name__)


class Prune(Pass):
    """Prune attention heads (BERT) and FFN channels (BERT, SqueezeBERT: evenly per group); follow with distill."""

    name = "prune"

    class Config(PassConfig):
        model: str = Field("teacher", description="the teacher or a student of this run")
        output: str | None = Field(
            "pruned",
            pattern=r"^[A-Za-z0-9_.-]+$",
            description="name of the pruned copy (a new student); null prunes `model` in place",
        )
        ffn_ratio: float = Field(0.0, ge=0, lt=1, description="share of FFN channels removed in every layer")
        head_ratio: float = Field(
            0.0, ge=0, lt=1, description="share of attention heads removed (BERT, SqueezeBERT: evenly per group)"
        )
        importance: Literal["magnitude", "taylor"] = Field(
            "magnitude", description="|w|^2, or |w * dL/dw| on task batches"
        )
        scope: Literal["layer", "global"] = Field(
            "layer", description="heads: same share per layer, or lowest scores overall"
        )
        taylor_samples: PositiveInt = Field(256, description="train examples whose gradients rank channels (taylor)")

    def run(self, state: RunState, config: Config) -> RunState:
        model, name = self._source(state, config), config.output or config.model
        val = state.encoded("validation")
        before = _measure(model, state, val)
        slots, heads = _prune(model, state, config)
        if name != "teacher" and config.model in state.conversions:
            state.conversions[name] = _narrowed(state.conversions[config.model], slots, model.config)
        if name == "teacher":
            state.teacher = model
        else:
            state.students[name] = model
        after = _measure(model, state, val)
        report = {
            "from": config.model,
            "importance": config.importance,
            "scope": config.scope,
            "heads_removed": heads,
            "heads_per_layer": Architecture.of(model.config).heads,
            "intermediate_size": model.config.intermediate_size,
            "before": before,
            "after": after,
        }
        state.report(self.name)[name] = report
        log.info(
            "pruned %s -> %s: params %.1fM -> %.1fM, GFLOPs/seq128 %.2f -> %.2f, heads/layer %s, FFN %d, "
            "val %s %.4f -> %.4f (before distillation)",
            *(config.model, name, before["params"] / 1e6, after["params"] / 1e6, before["gflops"], after["gflops"]),
            *(report["heads_per_layer"], model.config.intermediate_size, state.task.metric),
            *(before["val_score"], after["val_score"]),
        )
        return state

    @staticmethod
    def _source(state: RunState, config: Config) -> PreTrainedModel:
        """The model to prune (a copy when `output` names a new one), checked before any work."""
        models = state.models()
        if config.model not in models:
            raise CompressError(
                f"prune.model {config.model!r} is not in this run (have {list(models)}); add a convert pass or "
                "name one of them"
            )
        if config.output == "teacher" or (config.output in state.students and config.output != config.model):
            raise CompressError(f"prune.output {config.output!r} would overwrite another model; pick a new name")
        if config.ffn_ratio == 0 and config.head_ratio == 0:  # allowed, so a search can include "no pruning"
            log.warning(
                "prune: ffn_ratio and head_ratio are both 0; %s is an unpruned copy", config.output or config.model
            )
        source = models[config.model]
        kind = source.config.model_type
        if config.head_ratio and kind == "squeezebert":  # refused before any work: heads even over the groups
            heads = Architecture.of(source.config).heads
            seg = check_heads_divisible(source.config)
            plan_heads([torch.zeros(h) for h in heads], config.head_ratio, config.scope, seg)
        return (copy.deepcopy(source) if config.output else source).cpu().eval()


def _narrowed(conv: Conversion, slots: dict[int, list[int]], config) -> Conversion:
    """`conv` with each layer's head order cut to the heads that stay (distillation matches attention maps by it).
    `slots`: the heads removed, as positions among those each layer had (no order recorded: the teacher's)."""
    orders = conv.head_orders or [list(range(config.num_attention_heads))] * config.num_hidden_layers
    new = [[t for s, t in enumerate(order) if s not in slots.get(i, [])] for i, order in enumerate(orders)]
    return conv.model_copy(update={"head_orders": new})


def _measure(model: PreTrainedModel, state: RunState, val: Encoded) -> dict[str, float]:
    """Size, cost and validation score of `model` (before and after pruning)."""
    score = state.task.score(predict(model, val, state.device), val)
    model.cpu()
    return {
        "params": count_parameters(model),
        "gflops": flops_per_sequence(model.config, 128) / 1e9,
        "val_score": score,
    }


def _prune(
    model: PreTrainedModel, state: RunState, config: Prune.Config
) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Remove heads, then FFN channels, ranked by `config.importance` on training batches; the heads removed, as
    positions among each layer's heads before this pass and as original indices."""
    train = state.encoded("train")
    calib = list(batches(train, 32, np.arange(min(config.taylor_samples, len(train)))))
    if config.importance == "taylor":
        accumulate_gradients(model, calib, state.task.kind)
    slots: dict[int, list[int]] = {}
    heads: dict[int, list[int]] = {}
    if config.head_ratio:
        squeeze = model.config.model_type == "squeezebert"
        seg = head_segments(model.config) if squeeze else 1
        slots = plan_heads(head_scores(model, config.importance), config.head_ratio, config.scope, seg)
        heads = original_heads(slots, model.config)
        # transformers' own for BERT (ours for SqueezeBERT, compress.modeling.squeezebert): config.pruned_heads
        # makes from_pretrained redo it
        model.prune_heads(heads)
        if config.importance == "taylor":
            accumulate_gradients(model, calib, state.task.kind)  # new modules: their gradients for the FFN ranking
    if config.ffn_ratio:
        if model.config.model_type == "bert":
            prune_bert_ffn(model, config.ffn_ratio, config.importance, {k: calib[0][k] for k in MODEL_INPUTS})
        else:
            prune_squeezebert_ffn(model, config.ffn_ratio, config.importance)
    model.zero_grad(set_to_none=True)
    return slots, heads
