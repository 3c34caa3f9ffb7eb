"""Distillation losses and the loss function the training loop calls.

    loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels)    (CE over labelled texts only)
           (regression: alpha * MSE(s, t) + (1 - alpha) * MSE(s, labels); the task kind supplies both terms)
           + hidden_weight * mean MSE(proj(s_hidden[i]), t_hidden[j])   over the hidden-state layer map
           + attention_weight * mean KL(t_attn[j] || s_attn[i])         over the attention layer map
    (the first two terms are scaled by prediction_weight: 0 in an intermediate-layers-only stage)

Teacher outputs come from the on-disk cache (`teacher_cache`) when given, else from the live teacher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from compress.core.records import Conversion
from compress.data.encoding import MODEL_INPUTS
from compress.modeling.heads import logits_of
from compress.tasks.kinds import KINDS, TaskKind
from compress.train.teacher_cache import TeacherOutputs


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over real (unpadded) tokens and channels; `mask` is [B, L, 1]."""
    return (((student - teacher) ** 2) * mask).sum() / (mask.sum() * student.shape[-1])


def attention_kl(
    student_scores: torch.Tensor, teacher_probs: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """KL(teacher || student) of attention distributions, averaged over real query positions and heads.

    SqueezeBERT returns pre-softmax scores (mask already added); BERT returns probabilities."""
    s_log = F.log_softmax(student_scores, -1)
    kl = (teacher_probs * (torch.log(teacher_probs.clamp_min(1e-8)) - s_log)).sum(-1)  # [B, heads, L]
    qmask = attention_mask[:, None, :].float()
    return (kl * qmask).sum() / (qmask.sum() * kl.shape[1])


def orders_of(conv: Conversion | None) -> dict[str, Any]:
    """`DistillLoss`'s hidden_order and head_orders for a converted student (nothing: the teacher's order, as for a
    student loaded from a folder)."""
    if conv is None:
        return {}
    hidden = torch.tensor(conv.hidden_order) if conv.hidden_order else None
    return {"hidden_order": hidden, "head_orders": {i: torch.tensor(h) for i, h in enumerate(conv.head_orders)}}


@dataclass
class DistillLoss:
    """The loss of one student, as `fit` wants it: `(model, batch) -> scalar`."""

    teacher: torch.nn.Module
    temperature: float
    alpha: float
    cached: TeacherOutputs | None = None
    hidden_map: list[tuple[int, int]] = field(default_factory=list)  # (student, teacher) hidden-state indices
    hidden_weight: float = 0.0
    attention_map: list[tuple[int, int]] = field(default_factory=list)  # (student, teacher) layers
    attention_weight: float = 0.0
    proj: torch.nn.ModuleDict = field(default_factory=torch.nn.ModuleDict)  # student width -> teacher width
    # A converted student's channels and heads are the teacher's reordered (`Conversion.hidden_order`,
    # `.head_orders`): teacher targets are indexed by them so that each student channel/head learns its own.
    hidden_order: torch.Tensor | None = None
    head_orders: dict[int, torch.Tensor] = field(default_factory=dict)  # student layer -> teacher head per slot
    kind: TaskKind = KINDS["classification"]
    prediction_weight: float = 1.0  # 0: intermediate layers only (TinyBERT's first stage)

    def teacher_outputs(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, Any]:
        if self.cached is not None:
            t = self.cached.batch(batch["index"], batch["input_ids"].shape[1])
            return {
                "logits": t["logits"].to(device),
                "hidden": {k: v.to(device) for k, v in t["hidden"].items()},
                "attention": {k: v.to(device) for k, v in t["attention"].items()},
            }
        with torch.no_grad():
            o = self.teacher(
                *(batch[k] for k in MODEL_INPUTS),
                output_hidden_states=bool(self.hidden_map),
                output_attentions=bool(self.attention_map),
            )
        return {
            "logits": logits_of(o),
            "hidden": {t: o.hidden_states[t] for _, t in self.hidden_map},
            "attention": {t: o.attentions[t] for _, t in self.attention_map},
        }

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(
            *(batch[k] for k in MODEL_INPUTS),
            output_hidden_states=bool(self.hidden_map),
            output_attentions=bool(self.attention_map),
        )
        logits = logits_of(out)
        t = self.teacher_outputs(batch, logits.device)
        kd = self.kind.distill_loss(logits, t["logits"], self.temperature, batch)
        loss = self.alpha * kd if self.alpha < 1 else kd
        if self.alpha < 1 and self.kind.has_labels(batch["labels"]):  # teacher-labelled texts have only the KD term
            loss = loss + (1 - self.alpha) * self.kind.supervised_loss(logits, batch["labels"])
        loss = self.prediction_weight * loss
        mask = batch["attention_mask"].unsqueeze(-1).float()
        for s, tl in self.hidden_map:
            sh, th = out.hidden_states[s], t["hidden"][tl]
            if str(s) in self.proj:
                sh = self.proj[str(s)](sh)
            elif self.hidden_order is not None:
                th = th[..., self.hidden_order.to(th.device)]
            loss = loss + self.hidden_weight / len(self.hidden_map) * hidden_mse(sh, th, mask)
        for s, tl in self.attention_map:
            ta = t["attention"][tl]
            if s in self.head_orders:
                ta = ta[:, self.head_orders[s].to(ta.device)]
            loss = loss + self.attention_weight / len(self.attention_map) * attention_kl(
                out.attentions[s], ta, batch["attention_mask"]
            )
        return loss
