"""Text pairs and their tokenised seq2seq batches.

Differences from the reference collator (method §6): label padding is -100 (ignored by the loss)
rather than pad id 0, and the batch carries integer `task_ids` instead of one task string, so a
batch may mix tasks; single-task batches are the sampler's default.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from hyperexport.errors import UserError
from hyperexport.tasks.registry import TaskSpec

LABEL_PAD_ID = -100


@dataclass(frozen=True)
class Example:
    """One source/target text pair of a task."""

    task: str
    source: str
    target: str


def make_examples(task: TaskSpec, raw: Sequence[Mapping]) -> list[Example]:
    """Raw examples formatted by the task's template and label rule."""
    return [Example(task.name, task.format_source(row), task.format_target(row)) for row in raw]


def collate(
    tokenizer,
    examples: Sequence[Example],
    task_index: Mapping[str, int],
    max_source_length: int,
    max_target_length: int,
) -> dict[str, torch.Tensor]:
    """Tokenised batch; the tokenizer appends </s> to source and target (T5 / ByT5)."""
    unknown = sorted({example.task for example in examples} - set(task_index))
    if unknown:
        raise UserError(
            f"task(s) {', '.join(unknown)} have no task id in this model (it knows "
            f"{', '.join(task_index)}); evaluate only the tasks it was trained on"
        )
    sources = _tokenize(tokenizer, [example.source for example in examples], max_source_length)
    targets = _tokenize(tokenizer, [example.target for example in examples], max_target_length)
    labels = targets["input_ids"].masked_fill(targets["attention_mask"] == 0, LABEL_PAD_ID)
    task_ids = [task_index[example.task] for example in examples]
    return {
        "input_ids": sources["input_ids"],  # [B, S]
        "attention_mask": sources["attention_mask"],  # [B, S]
        "labels": labels,  # [B, T], padding = -100
        "task_ids": torch.tensor(task_ids, dtype=torch.long),  # [B]
    }


def _tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    encoded = tokenizer(
        texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {key: encoded[key].long() for key in ("input_ids", "attention_mask")}
