"""The train / validation / test protocol of method §6 (`split_validation_test=true`).

Each task's `split_policy` decides where a requested split comes from (source splits are named
after the task's `split_map`):
- "small": train is the full train split; validation and test are the first and second half of a
  seeded permutation (`torch.randperm`, generator seeded with `data_seed`) of the validation split.
- "large": validation is the first `large_validation_size(n)` examples of a seeded permutation of
  train; test is the mapped test split (for GLUE the original dev set). Train excludes the
  validation examples unless `validation_leak=True`, which reproduces the reference (method §6).
- "direct": the mapped splits as they are.
`max_examples` keeps the first n of a seeded permutation of the split (few-shot, method §6).

Deliberate differences from the reference:
- No split drops its last example: the reference's `[:-1]` off-by-one (method §6) is not reproduced.
- The large-policy validation size is min(1000, n // 10), so demo-sized train sets keep 90% for
  training; every real large task (n >= 10,000) still gets the paper's 1,000.
- The large-policy train split keeps the source order; validation and test keep permutation order.
"""

import torch

from hyperexport.data.sources import load_raw_examples
from hyperexport.errors import UserError
from hyperexport.tasks.registry import REQUESTED_SPLITS, TaskSpec

LARGE_VALIDATION_SIZE = 1000


def task_split(
    task: TaskSpec,
    source: str,
    requested_split: str,
    path: str | None,
    data_seed: int = 42,
    validation_leak: bool = False,
    max_examples: int | None = None,
) -> list[dict]:
    """Raw examples of `requested_split` ("train" | "validation" | "test") under the task's policy."""
    if requested_split not in REQUESTED_SPLITS:
        raise UserError(f"unknown split '{requested_split}'; use one of {', '.join(REQUESTED_SPLITS)}")
    if max_examples is not None and max_examples < 1:
        raise UserError(f"max_examples is {max_examples}; use a positive count or leave it unset")

    def load(split: str) -> list[dict]:
        return load_raw_examples(task, source, task.split_map[split], path, data_seed)

    if task.split_policy == "small":
        examples = _small_policy_split(load, requested_split, data_seed)
    elif task.split_policy == "large":
        examples = _large_policy_split(load, requested_split, data_seed, validation_leak)
    else:
        examples = load(requested_split)
    return examples if max_examples is None else seeded_subset(examples, max_examples, data_seed)


def seeded_permutation(n: int, seed: int) -> list[int]:
    """`torch.randperm(n)` from a generator seeded with `seed`, as the reference draws it."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def seeded_subset(examples: list[dict], count: int, seed: int) -> list[dict]:
    """The first `count` examples of a seeded permutation (all of them if there are fewer)."""
    return [examples[index] for index in seeded_permutation(len(examples), seed)[:count]]


def large_validation_size(train_size: int) -> int:
    """Examples the large policy moves from train to validation: 1000, or a tenth of a small train."""
    return min(LARGE_VALIDATION_SIZE, train_size // 10)


def _small_policy_split(load, requested_split: str, seed: int) -> list[dict]:
    if requested_split == "train":
        return load("train")
    examples = load("validation")
    order = seeded_permutation(len(examples), seed)
    half = len(examples) // 2
    chosen = order[:half] if requested_split == "validation" else order[half:]
    return [examples[index] for index in chosen]


def _large_policy_split(load, requested_split: str, seed: int, validation_leak: bool) -> list[dict]:
    if requested_split == "test":
        return load("test")
    examples = load("train")
    order = seeded_permutation(len(examples), seed)
    held_out = order[: large_validation_size(len(examples))]
    if requested_split == "validation":
        return [examples[index] for index in held_out]
    if validation_leak:
        return examples
    held_out_set = set(held_out)
    return [example for index, example in enumerate(examples) if index not in held_out_set]
