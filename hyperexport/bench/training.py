"""`bench --train`: training steps/s of HyperFormer++ against plain per-task adapters (Adapter†) on the
same backbone shape and batches."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from hyperexport.bench.subject import (
    Subject,
    adapter_bottleneck,
    check_settings,
    load_subject,
    machine_facts,
    random_inputs,
    torch_threads,
)
from hyperexport.training.accelerator import accelerator_for
from hyperexport.training.step import batch_loss, optimizer_step

if TYPE_CHECKING:
    from accelerate import Accelerator

    from hyperexport.recipe.schema import ModelVariant, Recipe

TRAIN_VARIANTS: tuple[ModelVariant, ...] = ("hyperformer++", "adapters")


def bench_training(run: str | Path | None = None, *, task: str, backbone: str | None = None,
                   recipe: str | Path | None = None, batch: int = 8, seq: int = 128, rounds: int = 10,
                   threads: int | None = None, progress_bar: bool = True) -> dict:
    """Training steps/s of HyperFormer++ and of plain per-task adapters (Adapter†): same backbone shape,
    same batches (one task per batch, cycling over the recipe's tasks), the same step as `train`
    (`training.step`: the recipe's loss, clipping, AdamW and its schedule), alternated."""
    check_settings(seq, rounds)
    subject = load_subject(run, task, backbone, recipe)
    with torch_threads(threads) as threads:
        seconds = _time_training_steps(subject, batch, seq, rounds, progress_bar)
    rows = {v: {"p50_ms": 1e3 * float(np.median(s)), "steps_per_s": 1 / float(np.median(s))}
            for v, s in seconds.items()}
    return {"machine": machine_facts(threads), "source": subject.source, "backbone": subject.recipe.backbone.config,
            "adapter_bottleneck": adapter_bottleneck(subject), "batch": batch, "seq": seq, "rounds": rounds,
            "training": rows, "overhead": rows["hyperformer++"]["p50_ms"] / rows["adapters"]["p50_ms"] - 1}


def _time_training_steps(subject: Subject, batch: int, seq: int, rounds: int,
                         progress_bar: bool) -> dict[str, list[float]]:
    from tqdm.auto import tqdm

    accelerator = accelerator_for("cpu", "fp32")  # bench times the CPU in fp32, whatever the recipe trains in
    names = [t.name for t in subject.recipe.tasks]
    steps = {variant: _training_step(accelerator, _with_variant(subject.recipe, variant), names)
             for variant in TRAIN_VARIANTS}
    batches = [_training_batch(subject, index, len(names), batch, seq) for index in range(len(names))]
    for fn in steps.values():  # warm-up
        fn(batches[0])
    seconds: dict[str, list[float]] = {v: [] for v in steps}
    for r in tqdm(range(rounds), desc="train bench", disable=not progress_bar):
        for variant in (TRAIN_VARIANTS if r % 2 == 0 else TRAIN_VARIANTS[::-1]):
            start = time.perf_counter()
            steps[variant](batches[r % len(batches)])
            seconds[variant].append(time.perf_counter() - start)
    return seconds


def _with_variant(recipe: Recipe, variant: ModelVariant) -> Recipe:
    return replace(recipe, model=replace(recipe.model, variant=variant))


def _training_step(accelerator: Accelerator, recipe: Recipe, task_names: list[str]) -> Callable[[dict], None]:
    """One training step of a fresh model of `recipe`, as `train` takes it (`training.step`)."""
    from transformers import get_linear_schedule_with_warmup

    from hyperexport.model.build import build_model

    config = recipe.train
    model = build_model(recipe, task_names).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                                  eps=config.adam_epsilon, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, config.warmup_steps, config.max_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    def step(batch: dict[str, torch.Tensor]) -> None:
        loss = batch_loss(accelerator, model, batch, config)
        optimizer_step(accelerator, model, loss, optimizer, scheduler, config.max_grad_norm)

    return step


def _training_batch(subject: Subject, task_id: int, num_tasks: int, batch: int, seq: int) -> dict[str, torch.Tensor]:
    """A collated batch of random inputs with one task's label as every target (`data.collate`'s layout)."""
    input_ids, attention_mask = random_inputs(subject, batch, seq)  # [B, S]
    labels = subject.label_ids[task_id % subject.label_ids.shape[0]].repeat(batch, 1)  # [B, L], -100 on padding
    return {"task_ids": torch.full((batch,), task_id % num_tasks), "input_ids": input_ids,
            "attention_mask": attention_mask, "labels": labels}
