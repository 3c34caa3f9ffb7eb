"""Convert the teacher into a SqueezeBERT student: grouped 1x1 convolutions, initialized from BERT."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BeforeValidator, Field, PositiveInt

from compress.convert.build import convert
from compress.core.errors import CompressError
from compress.core.groups import Groups
from compress.core.records import Conversion
from compress.data.encoding import MODEL_INPUTS, batches
from compress.modeling.heads import logits_of
from compress.modeling.runners import predict
from compress.pipeline.registry import Pass, PassConfig
from compress.pipeline.state import RunState

log = logging.getLogger(__name__)


def _groups(value: Any) -> Any:
    """ "4,4,4,1,4,4" or six integers -> Groups; a mapping is validated field by field (unknown keys refused)."""
    if isinstance(value, str):  # a ValueError here is reported by pydantic with the recipe key path
        return Groups.parse(value)
    if isinstance(value, (list, tuple)):
        return Groups.parse(",".join(map(str, value)))
    return value


GroupsOption = Annotated[Groups, BeforeValidator(_groups)]


class Convert(Pass):
    """Build a SqueezeBERT student from the teacher (layers kept, group counts, permuted block init)."""

    name = "convert"

    class Config(PassConfig):
        student: str = Field("student", pattern=r"^[A-Za-z0-9_.-]+$", description="name of the student in this run")
        layers: int | list[int] | None = Field(None, description="count (evenly spaced) or indices; default all")
        groups: GroupsOption = Field(
            Groups(), description="q,k,v,post_attention,intermediate,output: '4,4,4,1,4,4', six integers or a mapping"
        )
        intermediate_size: PositiveInt | None = Field(
            None,
            description=(
                "smaller FFN width: the channels of most output energy on fit_samples texts, output matrix refitted"
            ),
        )
        hidden_size: PositiveInt | None = Field(
            None,
            description=(
                "narrower residual stream and attention (a multiple of the teacher's head size; heads = "
                "hidden_size / head size): the channels and heads of most energy on fit_samples texts"
            ),
        )
        init: Literal["permuted", "identity", "random"] = "permuted"
        iterations: PositiveInt = Field(3, description="alternating permutation-search rounds")
        fit_samples: int = Field(
            256, ge=0, description="train examples whose activations fit the kept blocks (permuted init; 0 = no fit)"
        )
        compare_inits: bool = Field(False, description="also measure identity, random and no-fit init before training")

    def run(self, state: RunState, config: Config) -> RunState:
        teacher = state.teacher
        if teacher is None:
            raise CompressError("convert needs a teacher; add a teacher: section to the recipe")
        if teacher.config.pruned_heads:
            raise CompressError(
                "convert needs a teacher with all its heads (SqueezeBERT's attention width equals its hidden size); "
                "prune heads into a separate model (prune.output) or prune only FFN channels before convert"
            )
        if config.student == "teacher":
            raise CompressError("convert.student cannot be named 'teacher'; pick another name")
        groups = config.groups
        build = lambda init, fit=True: convert(
            teacher,
            config.layers,
            groups,
            config.intermediate_size,
            init,
            config.iterations,
            calib_batches=self._calibration(state, config.fit_samples) if fit and config.fit_samples else None,
            hidden_size=config.hidden_size,
        )
        student, report = build(config.init)
        if config.init != "random":
            log.info(
                "%s: layers %s, groups %s, energy kept per layer %s (identity order: %s), least-squares fit: %s",
                config.student,
                report["layers"],
                groups.as_dict(),
                np.round(report["energy_kept_per_layer"], 3).tolist(),
                np.round(report["energy_kept_identity_per_layer"], 3).tolist(),
                report["least_squares_fit"],
            )
        if config.compare_inits:
            report["init_comparison"] = {
                "permuted": start_quality(state, student if config.init == "permuted" else build("permuted")[0]),
                "permuted_without_fit": start_quality(state, build("permuted", fit=False)[0]),
                "identity": start_quality(state, student if config.init == "identity" else build("identity")[0]),
                "random": start_quality(state, student if config.init == "random" else build("random")[0]),
            }
            for init, q in report["init_comparison"].items():
                log.info(
                    "%s init=%s before training: val %.4f, loss to teacher %.4f",
                    config.student,
                    init,
                    q["val_score"],
                    q["loss_to_teacher"],
                )
        state.students[config.student] = student
        state.conversions[config.student] = Conversion(
            teacher_layers=report["layers"],
            groups=groups.as_dict(),
            intermediate_size=report["intermediate_size"],
            hidden_size=report["hidden_size"],
            init=config.init,
            hidden_order=report.pop("hidden_order", []),
            head_orders=report.pop("head_orders", []),
        )
        state.report(self.name)[config.student] = report
        return state

    @staticmethod
    def _calibration(state: RunState, samples: int) -> list[dict[str, torch.Tensor]]:
        """The first `samples` training examples, as padded batches on the CPU."""
        train = state.encoded("train")
        idx = np.arange(min(samples, len(train)))
        return list(batches(train, 32, idx))


@torch.no_grad()
def start_quality(state: RunState, student: torch.nn.Module) -> dict[str, float]:
    """The task metric on validation, and the distillation loss to the teacher (KL at T=1; MSE for regression), of an
    untrained student."""
    enc = state.encoded("validation")
    teacher = state.teacher
    assert teacher is not None
    student.eval().to(state.device)
    teacher.eval().to(state.device)
    losses = []
    for b in batches(enc, 64):
        b = {k: v.to(state.device) for k, v in b.items()}
        s, t = (logits_of(m(*(b[k] for k in MODEL_INPUTS))) for m in (student, teacher))
        losses.append(float(state.task.kind.distill_loss(s, t, 1.0, b)) * len(b["index"]))
    return {
        "val_score": state.task.score(predict(student, enc, state.device), enc),
        "loss_to_teacher": sum(losses) / len(enc),
    }
