"""One training step, the same for `train`, `adapt` (and its nearest-task search) and `bench --train`:
the recipe's loss of a collated batch, teacher-forced, then the optimizer step through the Accelerator
(which scales, synchronises and clips gradients the same way on a CPU, a GPU or several)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from hyperexport.training.loss import label_smoothed_nll_loss

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch.optim.lr_scheduler import LRScheduler

    from hyperexport.recipe.schema import TrainConfig


def batch_loss(accelerator: Accelerator, model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
               config: TrainConfig) -> torch.Tensor:
    """The label-smoothed loss of one collated batch (`data.collate`) on the accelerator's device, under
    its autocast. `model` is a HyperT5, or the wrapper `accelerator.prepare` made of it. The decoder reads
    the labels shifted right (T5's decoder start token first, -100 padding as pad tokens)."""
    batch = {key: value.to(accelerator.device) for key, value in batch.items()}
    labels = batch["labels"]  # [B, T], -100 on padding
    decoder_input_ids = accelerator.unwrap_model(model).backbone._shift_right(labels)  # [B, T]
    with accelerator.autocast():
        logits = model(
            task_ids=batch["task_ids"],  # [B]
            input_ids=batch["input_ids"],  # [B, S]
            attention_mask=batch["attention_mask"],  # [B, S]
            decoder_input_ids=decoder_input_ids,
        ).logits  # [B, T, V]
        return label_smoothed_nll_loss(logits, labels, config.label_smoothing, config.loss_reduction)  # []


def optimizer_step(accelerator: Accelerator, model: torch.nn.Module, loss: torch.Tensor,
                   optimizer: torch.optim.Optimizer, scheduler: LRScheduler, max_grad_norm: float) -> None:
    """Backward through the Accelerator, the model's gradients clipped to a total norm of `max_grad_norm`
    (when positive; frozen parameters have none), one optimizer and scheduler step, gradients cleared."""
    accelerator.backward(loss)
    if max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
