"""A new task's labelled rows for `adapt`: read from a JSONL or CSV file and checked, the K shots drawn
stratified by label, and the evaluation rows halved into the task's validation and test splits.

- Shots: K examples in total, round-robin over the task's labels in order, each label's rows in a
  permutation seeded with `seed`: K = 4 on a binary task is 2 + 2. No K: every row.
- Evaluation rows (`eval_data`, else the rows of `data` not drawn as shots) are halved with the run's
  data seed, so `evaluate` and `verify` measure the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hyperexport.contracts import manifest as sealing
from hyperexport.data.collate import make_examples
from hyperexport.data.sources import task_file_rows
from hyperexport.data.splits import seeded_permutation
from hyperexport.errors import UserError
from hyperexport.tasks.registry import TaskSpec
from hyperexport.training.task_data import TaskData

MIN_EVAL_ROWS = 2  # one validation and one test example at least
SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}


@dataclass(frozen=True)
class FewShotData:
    """The rows of a new task: the K shots and the two evaluation halves."""

    train: list[dict]
    validation: list[dict]
    test: list[dict]

    def task_data(self, spec: TaskSpec) -> TaskData:
        return TaskData(spec, *(make_examples(spec, rows) for rows in (self.train, self.validation, self.test)))


def read_few_shot(spec: TaskSpec, data: Path, eval_data: Path | None, *, shots: int | None, seed: int,
                  data_seed: int) -> FewShotData:
    """The rows of `data` (and `eval_data`) checked, split into shots and evaluation halves."""
    rows = read_labelled_file(spec, data, "--data")
    extra = read_labelled_file(spec, eval_data, "--eval-data") if eval_data is not None else None
    return split_few_shot(spec, rows, extra, shots, seed, data_seed)


def read_labelled_file(spec: TaskSpec, file: Path, what: str) -> list[dict]:
    """Every row of a JSONL or CSV file, checked: the task's fields present and a known label."""
    if file.is_dir():
        raise UserError(f"{what} {file} is a folder: give one .jsonl or .csv file of labelled examples")
    if not file.is_file():
        raise UserError(f"{what} file {file} does not exist: give a .jsonl or .csv file of labelled examples")
    source = SUFFIXES.get(file.suffix.lower())
    if source is None:
        raise UserError(f"{what} file {file} is neither .jsonl (one JSON object per line) nor .csv: "
                        "rename or convert it")
    rows = task_file_rows(spec, source, file)
    if not rows:
        raise UserError(f"{what} file {file} has no examples: give at least one labelled {source} row")
    for line, row in rows:
        try:
            spec.format_source(row)
            spec.format_target(row)
        except UserError as error:
            raise UserError(f"{file}:{line}: {error}") from None
    return [row for _, row in rows]


def few_shot_indices(targets: list[str], labels: tuple[str, ...], shots: int, seed: int) -> list[int]:
    """`shots` indices in total, stratified by label: round-robin over the labels (the task's order, then any
    others), each label's rows in a permutation seeded with `seed`."""
    order = seeded_permutation(len(targets), seed)
    queues = {label: [i for i in order if targets[i] == label]
              for label in [*labels, *sorted(set(targets) - set(labels))]}
    chosen: list[int] = []
    while len(chosen) < shots:
        for queue in queues.values():
            if queue and len(chosen) < shots:
                chosen.append(queue.pop(0))
    return chosen


def split_few_shot(spec: TaskSpec, rows: list[dict], eval_rows: list[dict] | None, shots: int | None, seed: int,
                   data_seed: int) -> FewShotData:
    """The shots, and the evaluation rows halved into validation and test (permutation seeded by `data_seed`)."""
    if shots is not None and shots > len(rows):
        raise UserError(f"--shots {shots} but --data has {len(rows)} examples: ask for fewer shots")
    chosen = list(range(len(rows))) if shots is None else few_shot_indices(
        [spec.format_target(row) for row in rows], spec.labels, shots, seed)
    if eval_rows is None:
        taken = set(chosen)
        eval_rows = [row for index, row in enumerate(rows) if index not in taken]
    if len(eval_rows) < MIN_EVAL_ROWS:
        raise UserError(f"adapt needs at least {MIN_EVAL_ROWS} labelled examples to measure the task on: "
                        "pass --eval-data FILE, or give --data more rows than --shots")
    order = seeded_permutation(len(eval_rows), data_seed)
    half = len(order) // 2
    return FewShotData([rows[i] for i in chosen], [eval_rows[i] for i in order[:half]],
                       [eval_rows[i] for i in order[half:]])


def data_facts(data: Path, eval_data: Path | None) -> dict:
    """Where the rows came from, for the manifest: each file's absolute path and sha256."""
    files = {"data": data, "eval_data": eval_data}
    return {key: None if path is None else {"path": str(path.resolve()), "sha256": sealing.sha256_file(path)}
            for key, path in files.items()}
