"""Fine-tune the teacher on the task, reusing a cached result for the same inputs."""

from __future__ import annotations

import json
import logging

from pydantic import Field, PositiveInt

from compress.core.atomic import atomic_dir
from compress.core.errors import CompressError
from compress.core.hashing import stable_hash, state_dict_hash
from compress.data.encoding import MODEL_INPUTS
from compress.modeling.heads import logits_of
from compress.modeling.loading import load_student
from compress.passes.options import TrainOptions
from compress.pipeline.registry import Pass
from compress.pipeline.state import RunState
from compress.train.loop import fit

log = logging.getLogger(__name__)


class FinetuneTeacher(Pass):
    """Fine-tune the teacher (AdamW, warm-up + linear decay, best epoch kept); cached by content hash."""

    name = "finetune_teacher"

    class Config(TrainOptions):
        epochs: PositiveInt = 2
        lr: float = Field(5e-5, gt=0, lt=1)
        cache: bool = Field(True, description="reuse a teacher fine-tuned on the same weights/data/options/seed")

    def run(self, state: RunState, config: Config) -> RunState:
        teacher = state.teacher
        if teacher is None:
            raise CompressError("finetune_teacher needs a teacher; add a teacher: section to the recipe")
        train, val = state.encoded("train"), state.encoded("validation")
        # The key is everything that changes the result: starting weights, tokens, options, seed, device type.
        key = stable_hash(
            {
                "weights": state_dict_hash(teacher),
                "train": train.key,
                "validation": val.key,
                "options": config.model_dump(exclude={"cache"}),
                "seed": state.seed,
                "device": state.device.type,
            }
        )
        folder = state.cache_dir / "teachers" / key
        if config.cache and folder.is_dir():
            try:
                state.teacher = load_student(folder)
                state.reports[self.name] = json.loads((folder / "finetune.json").read_text()) | {"cached": True}
                log.info("fine-tuned teacher reused from cache %s", folder)
                return state
            except (CompressError, OSError, json.JSONDecodeError) as e:
                log.warning("cached teacher %s unusable (%s); fine-tuning again", folder, e)

        def loss_fn(model, batch):
            return state.task.kind.supervised_loss(logits_of(model(*(batch[k] for k in MODEL_INPUTS))), batch["labels"])

        history = fit(
            teacher,
            loss_fn,
            train,
            val,
            config.schedule(),
            state.task,
            device=state.device,
            seed=state.seed,
            desc="teacher",
        )
        info = {
            "history": history,
            "metric": state.task.metric,
            "best_val_score": max(h["val_score"] for h in history),
            "key": key,
        }
        with atomic_dir(folder) as tmp:
            teacher.save_pretrained(tmp)
            state.tokenizer.save_pretrained(tmp)
            (tmp / "finetune.json").write_text(json.dumps(info, indent=2))
        state.reports[self.name] = info | {"cached": False}
        return state
