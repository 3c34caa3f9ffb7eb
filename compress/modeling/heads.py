"""The heads on top of the encoder, per task kind: which transformers classes a teacher and its students are.

A head says which `BertFor*` / `SqueezeBertFor*` pair carries it, the module that holds its weights, and
whether it reads the pooled [CLS] vector (sequence heads) or every token's hidden state (token heads).
Conversion, the inference form, loading and model cards ask this table instead of assuming a sequence
classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import transformers


@dataclass(frozen=True)
class Head:
    name: str
    bert: str  # transformers class of a BERT teacher with this head
    squeezebert: str  # the student's class
    module: str  # attribute holding the head's weights
    pooled: bool  # reads tanh(pooler([CLS])) (sequence) rather than every token's hidden state


HEADS = {
    h.name: h
    for h in (
        Head(
            "sequence",
            "BertForSequenceClassification",
            "SqueezeBertForSequenceClassification",
            "classifier",
            pooled=True,
        ),
        Head("token", "BertForTokenClassification", "SqueezeBertForTokenClassification", "classifier", pooled=False),
        Head("span", "BertForQuestionAnswering", "SqueezeBertForQuestionAnswering", "qa_outputs", pooled=False),
    )
}


def logits_of(output) -> torch.Tensor:
    """A model output's logits as one tensor: `logits`, or for a span head start and end stacked as
    [batch, seq, 2] (the inference form's and the ONNX file's one `logits` output)."""
    logits = getattr(output, "logits", None)
    if logits is not None:
        return logits
    if hasattr(output, "start_logits"):
        return torch.stack([output.start_logits, output.end_logits], -1)
    return output  # already a tensor (an inference form)


def model_class(head: str, model_type: str) -> type:
    """The transformers class for `head` on a `bert` or `squeezebert` encoder."""
    h = HEADS[head]
    return getattr(transformers, h.bert if model_type == "bert" else h.squeezebert)


def head_of(model) -> Head:
    """The head of a loaded model, from its class (sequence for anything else, as before heads existed)."""
    cls = type(model).__name__
    return next((h for h in HEADS.values() if cls in (h.bert, h.squeezebert)), HEADS["sequence"])


def head_of_config(config) -> str:
    """The head a saved model was trained with, from `config.architectures` (save_pretrained records it)."""
    arch = (getattr(config, "architectures", None) or [""])[0]
    return next((h.name for h in HEADS.values() if arch in (h.bert, h.squeezebert)), "sequence")
