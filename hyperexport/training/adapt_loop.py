"""How `adapt` learns and measures a new task on the one-task model, through the training loop's own
pieces (sampler, collate, the shared step) on the run's Accelerator:

- `nearest_task`: the trained task whose embedding, used as is, gives the shots the lowest loss
  (`--init-from auto`, method §10's "related task");
- `train_steps`: batches drawn with replacement from the shots, AdamW without weight decay, linear
  warmup (10%) and decay;
- `evaluate_new_task`: greedy generation and the task's metric, as `evaluate`.
"""

from __future__ import annotations

import sys

import torch

from hyperexport.data.collate import Example, collate
from hyperexport.data.sampler import MultiTaskBatchSampler
from hyperexport.model.hyper_t5 import HyperT5
from hyperexport.training.adapt_model import EMBEDDING_KEY, RunToAdapt, adaptation_model
from hyperexport.training.evaluate import evaluate_tasks
from hyperexport.training.step import batch_loss, optimizer_step
from hyperexport.training.task_data import TaskData


@torch.no_grad()
def nearest_task(run: RunToAdapt, examples: list[Example]) -> tuple[str, dict[str, float]]:
    """The trained task whose embedding gives `examples` the lowest loss (the recipe's loss, teacher-forced,
    dropout off), and every trained task's loss (a mean over the examples)."""
    task, config = examples[0].task, run.recipe.train
    table = run.trained[EMBEDDING_KEY]  # [T, t']
    model = adaptation_model(run, task, table[0])
    embeddings = model.task_embeddings
    assert embeddings is not None  # an adaptation model has the new task's embedding
    losses = {}
    for row, name in enumerate(run.task_names):
        embeddings.weight.copy_(table[row][None])
        total = 0.0
        for start in range(0, len(examples), config.eval_batch_size):
            chunk = examples[start:start + config.eval_batch_size]
            batch = collate(run.tokenizer, chunk, {task: 0}, run.recipe.data.max_source_length,
                            run.recipe.data.max_target_length)
            total += len(chunk) * batch_loss(run.accelerator, model, batch, config).item()
        losses[name] = total / len(examples)
    return min(losses, key=losses.__getitem__), losses


def train_steps(run: RunToAdapt, model: HyperT5, examples: list[Example], *, steps: int, learning_rate: float,
                seed: int, progress_bar: bool = True) -> list[float]:
    """`steps` AdamW steps on the model's trainable parameters, each through the shared training step;
    batches of the recipe's batch size (at most the number of shots), drawn with replacement. Returns
    each step's loss; `model` is left in eval mode."""
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    config, task, accelerator = run.recipe.train, examples[0].task, run.accelerator
    torch.manual_seed(seed)  # dropout
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, eps=config.adam_epsilon, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, steps // 10, steps)
    sampler = MultiTaskBatchSampler({task: len(examples)}, min(config.batch_size, len(examples)),
                                    seed=seed + accelerator.process_index)
    prepared, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    task_index = {task: model.task_id(task)}
    losses = []
    prepared.train()
    for _ in tqdm(range(steps), desc=f"adapt {task}", unit="step", disable=not progress_bar, file=sys.stderr):
        shots = [examples[index] for _, index in sampler.next_batch()]
        batch = collate(run.tokenizer, shots, task_index, run.recipe.data.max_source_length,
                        run.recipe.data.max_target_length)
        loss = batch_loss(accelerator, prepared, batch, config)
        optimizer_step(accelerator, prepared, loss, optimizer, scheduler, config.max_grad_norm)
        losses.append(loss.item())
    model.eval()
    return losses


def evaluate_new_task(run: RunToAdapt, model: HyperT5, task_data: TaskData, split: str = "test") -> dict:
    """The task's metrics on `split` (greedy generation, as `evaluate`) and the majority baseline."""
    result = evaluate_tasks(model, run.tokenizer, {task_data.spec.name: task_data}, split,
                            run.recipe.train.eval_batch_size, run.recipe.data.max_source_length,
                            run.accelerator.device, with_baseline=True)
    return result["tasks"][task_data.spec.name]
