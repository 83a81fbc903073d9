"""A recipe's tasks as ready examples: the task spec plus its train / validation / test splits."""

from __future__ import annotations

from dataclasses import dataclass

from hyperexport.data.collate import Example, make_examples
from hyperexport.data.splits import task_split
from hyperexport.tasks.registry import TASKS, TaskSpec, custom_task, get_task

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class TaskData:
    spec: TaskSpec
    train: list[Example]
    validation: list[Example]
    test: list[Example]

    def split(self, name: str) -> list[Example]:
        return getattr(self, name)


def task_spec(task_config) -> TaskSpec:
    """The registry's spec, or a custom task declared in the recipe (template, labels, metric)."""
    if task_config.template is not None or task_config.name not in TASKS:
        return custom_task(
            task_config.name,
            task_config.template,
            task_config.labels,
            task_config.metric,
            label_field=task_config.label_field,
        )
    return get_task(task_config.name)


def load_task_data(recipe, splits: tuple[str, ...] = SPLITS) -> dict[str, TaskData]:
    """Every task of the recipe, in recipe order (that order defines the task ids)."""
    return {task.name: _one_task(recipe.data, task, splits) for task in recipe.tasks}


def _one_task(data_config, task_config, splits: tuple[str, ...]) -> TaskData:
    spec = task_spec(task_config)
    limits = {"train": task_config.max_train_examples}
    loaded = {
        split: make_examples(
            spec,
            task_split(
                spec,
                task_config.source,
                split,
                task_config.path,
                data_seed=data_config.data_seed,
                validation_leak=data_config.validation_leak,
                max_examples=limits.get(split, task_config.max_eval_examples),
            ),
        )
        for split in splits
    }
    return TaskData(spec, *(loaded.get(split, []) for split in SPLITS))
