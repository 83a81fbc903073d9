"""The tasks a served export answers for, and a request's `task` names mapped to the graphs' `task_ids`.

A single-task export serves its one task: `task` may be left out, and a name other than the export's
is refused. A multi-task export (every graph takes `task_ids` [batch] int64, an index into the export's
task table, `contracts.task_table`) needs a `task` per row; the names become `task_ids`, fed to every
graph that takes them (`runtime.generation.greedy_generate`'s `extra`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hyperexport.contracts.export import ExportFolder
from hyperexport.contracts.task import TaskFacts
from hyperexport.contracts.task_table import TASK_IDS_INPUT


class UnknownTask(ValueError):
    """A request named a task the export does not serve (its message is the one-line answer)."""


@dataclass(frozen=True)
class ServedTasks:
    facts: tuple[TaskFacts, ...]  # in task-id order
    multi_task: bool  # the graphs take task_ids

    @classmethod
    def of(cls, export: ExportFolder) -> ServedTasks:
        if export.is_multitask:
            return cls(tuple(entry.facts for entry in export.task_table.tasks), multi_task=True)
        return cls((export.facts,), multi_task=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(facts.task for facts in self.facts)

    def index(self, name: str | None, model: str) -> int:
        """The task-id of a row's `task` (None: left out)."""
        if name is None:
            if self.multi_task:
                raise UnknownTask(f"{model} serves several tasks ({', '.join(self.names)}): send a task per row")
            return 0
        if name not in self.names:
            raise UnknownTask(f"unknown task '{name}': {model} serves {', '.join(self.names)}")
        return self.names.index(name)

    def feeds(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """The extra graph inputs of rows with these task-ids: `task_ids` for a multi-task export."""
        return {TASK_IDS_INPUT: np.asarray(indices, dtype=np.int64)} if self.multi_task else {}

    def labels_json(self) -> dict[str, list[str]]:
        """{task: its label strings}, in the order of the classify scores' columns."""
        return {facts.task: list(facts.labels) for facts in self.facts}

    def label_names_json(self) -> dict[str, list[str]]:
        """{task: what each label means} (the labels themselves for a task without names)."""
        return {facts.task: [facts.label_name(label) for label in facts.labels] for facts in self.facts}
