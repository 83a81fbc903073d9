"""A multi-task export's task table (`export --tasks`): tasks.json beside the graphs.

Row t of every stacked constant in the graphs (each adapter's tensors, the classify head's label table)
belongs to `tasks[t]`, and `task_ids` [batch] (the graphs' extra input) holds those row numbers. Each
entry carries the task's facts (template, labels, metrics, generation length: what `task.json` holds
for one task) and what identifies the materialized task its rows came from. The shared facts
(`layer_norms_sha256`, `backbone_weights_sha256`) are what a task must match to join the export
(`export --add-task`), since the graphs store the backbone and the run's trained layer norms once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hyperexport.contracts.fields import ContractError, from_json, to_json
from hyperexport.contracts.names import TASK_TABLE_FILE
from hyperexport.contracts.publish import write_json
from hyperexport.contracts.task import TaskFacts
from hyperexport.errors import UserError

TASK_IDS_INPUT = "task_ids"  # every graph's extra input: int64 [batch], a row of the task table per example


@dataclass(frozen=True)
class TaskSource:
    """The materialized task a row came from."""

    task_dir: str  # the task folder, relative to the export folder
    adapters_sha256: str  # of its adapters.safetensors
    source_run: str  # the run it was materialized from, relative to the export folder
    source_checkpoint_sha256: str  # of that run's weights when it was materialized


@dataclass(frozen=True)
class TaskEntry:
    facts: TaskFacts
    source: TaskSource


@dataclass(frozen=True)
class TaskTable:
    """tasks.json: the tasks of a multi-task export, in row order."""

    tasks: tuple[TaskEntry, ...]
    layer_norms_sha256: str  # the run's trained T5 layer norms, shared by every task (stored once)
    backbone_weights_sha256: str | None  # a run's saved backbone weights; None: a pretrained backbone by name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(entry.facts.task for entry in self.tasks)

    @property
    def max_labels(self) -> int:
        """The width of the classify head's scores: the most labels of any task."""
        return max(len(entry.facts.labels) for entry in self.tasks)

    def facts(self, task: str) -> TaskFacts:
        return self.tasks[self.index(task)].facts

    def index(self, task: str) -> int:
        """The row of `task` (the value of `task_ids` that selects it)."""
        if task not in self.names:
            raise UserError(f"task '{task}' is not in this export: its tasks are {', '.join(self.names)}")
        return self.names.index(task)

    def describe(self) -> str:
        """'0 rte, 1 sst2, 2 mrpc'."""
        return ", ".join(f"{row} {name}" for row, name in enumerate(self.names))

    @classmethod
    def read(cls, folder: Path) -> TaskTable:
        path = Path(folder) / TASK_TABLE_FILE
        try:
            return from_json(cls, json.loads(path.read_text()), TASK_TABLE_FILE)
        except (OSError, json.JSONDecodeError, ContractError) as error:
            raise UserError(f"cannot read {path} ({error}): export the tasks again") from None

    def write(self, folder: Path) -> None:
        write_json(Path(folder) / TASK_TABLE_FILE, to_json(self))


def has_task_table(folder: Path) -> bool:
    return (Path(folder) / TASK_TABLE_FILE).is_file()
