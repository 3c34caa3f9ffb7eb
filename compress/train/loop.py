"""The one training loop, shared by teacher fine-tuning and distillation.

AdamW (no decay on biases and norms), linear warm-up then linear decay, evaluation on the validation
split after every epoch, and the best epoch's weights restored at the end. The caller supplies the loss,
which is all that differs between fine-tuning (cross-entropy) and distillation (KD losses).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import get_linear_schedule_with_warmup

from compress.data.encoding import Encoded, batches, num_batches, shuffled
from compress.data.sources import TaskData
from compress.modeling.runners import predict

log = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Schedule:
    epochs: int
    lr: float
    batch_size: int
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def _param_groups(model: torch.nn.Module, weight_decay: float, extra: Iterable[torch.nn.Parameter]) -> list[dict]:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "layernorm" in name else decay).append(p)
    return [
        {"params": decay + [p for p in extra if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": no_decay + [p for p in extra if p.ndim < 2], "weight_decay": 0.0},
    ]


def fit(
    model: torch.nn.Module,
    loss_fn: LossFn,
    train: Encoded,
    validation: Encoded,
    schedule: Schedule,
    task: TaskData,
    *,
    device: torch.device,
    seed: int,
    desc: str,
    extra_params: Iterable[torch.nn.Parameter] = (),
    on_epoch_end: Callable[[int, float], None] | None = None,
) -> list[dict]:
    """Train `model` in place; return per-epoch history. The weights of the epoch best on the task's metric
    (validation) are kept.

    `on_epoch_end(epoch, val_score)` lets a caller (e.g. an Optuna pruner) stop a hopeless run by raising.
    """
    torch.manual_seed(seed)
    model.to(device)
    extra = list(extra_params)
    # fused AdamW: one kernel over all parameters instead of a loop of small ops (the 11.7M-parameter
    # embedding matrix makes the optimizer step a large share of a small model's training step).
    opt = torch.optim.AdamW(
        _param_groups(model, schedule.weight_decay, extra), lr=schedule.lr, fused=device.type in ("cpu", "cuda")
    )
    steps = schedule.epochs * num_batches(train, schedule.batch_size)
    sched = get_linear_schedule_with_warmup(opt, int(schedule.warmup_ratio * steps), steps)
    best_score, best_state, history = -float("inf"), None, []
    with progress() as bar:
        for epoch in range(1, schedule.epochs + 1):
            total = num_batches(train, schedule.batch_size)
            bar_task = bar.add_task(f"{desc} epoch {epoch}/{schedule.epochs}", total=total, info="")
            model.train()
            t0, losses = time.perf_counter(), []
            for batch in batches(train, schedule.batch_size, shuffled(train, seed + epoch, schedule.batch_size)):
                batch = {k: v.to(device) for k, v in batch.items()}
                loss = loss_fn(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([*model.parameters(), *extra], schedule.max_grad_norm)
                opt.step()
                sched.step()
                losses.append(loss.item())
                bar.update(bar_task, advance=1, info=f"loss {np.mean(losses[-50:]):.4f}")
                if not bar.console.is_terminal and len(losses) % max(1, total // 10) == 0:  # logs get progress too
                    log.info(
                        "%s epoch %d: %d/%d batches, loss %.4f", desc, epoch, len(losses), total, np.mean(losses[-50:])
                    )
            train_s = time.perf_counter() - t0
            val_score = task.score(predict(model, validation, device), validation)
            bar.update(bar_task, info=f"loss {np.mean(losses):.4f} val {task.metric} {val_score:.4f}")
            history.append(
                {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_score": val_score, "train_seconds": train_s}
            )
            log.info(
                "%s epoch %d: loss %.4f, val %s %.4f (%.0fs)",
                desc,
                epoch,
                np.mean(losses),
                task.metric,
                val_score,
                train_s,
            )
            if val_score > best_score:
                best_score, best_state = (
                    val_score,
                    copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}),
                )
            if on_epoch_end is not None:
                on_epoch_end(epoch, val_score)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history
