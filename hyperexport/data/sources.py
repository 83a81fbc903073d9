"""Raw examples of one source split, as a list of dicts with the hub dataset's field names.

Sources: "hf" (the hub, online users only), "glue_dir" (a local GLUE folder in the official TSV
layout), "jsonl" / "csv" (local files for custom tasks or offline copies), "demo" (synthetic data).
"""

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hyperexport.data.demo import DEMO_SPLIT_SIZES, demo_examples
from hyperexport.errors import UserError
from hyperexport.hub import datasets_offline_unless_reachable, unreachable_dataset
from hyperexport.tasks.registry import TaskSpec

SOURCES = ("hf", "glue_dir", "jsonl", "csv", "demo")


@dataclass(frozen=True)
class GlueTsvLayout:
    """Where a GLUE task lives in the official download and which column holds each field."""

    folder: str
    columns: Mapping[str, str | int]  # HF field -> header name, or column index when headerless
    has_header: bool = True


GLUE_TSV_LAYOUTS: Mapping[str, GlueTsvLayout] = {
    "cola": GlueTsvLayout("CoLA", {"sentence": 3, "label": 1}, has_header=False),
    "sst2": GlueTsvLayout("SST-2", {"sentence": "sentence", "label": "label"}),
    "mrpc": GlueTsvLayout(
        "MRPC", {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}
    ),
    "qqp": GlueTsvLayout(
        "QQP", {"question1": "question1", "question2": "question2", "label": "is_duplicate"}
    ),
    "stsb": GlueTsvLayout("STS-B", {"sentence1": "sentence1", "sentence2": "sentence2", "label": "score"}),
    "mnli": GlueTsvLayout(
        "MNLI", {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"}
    ),
    "qnli": GlueTsvLayout("QNLI", {"question": "question", "sentence": "sentence", "label": "label"}),
    "rte": GlueTsvLayout("RTE", {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}),
    "wnli": GlueTsvLayout("WNLI", {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}),
}
GLUE_TSV_FILES = {
    "train": "train.tsv",
    "validation": "dev.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
}


def load_raw_examples(
    task: TaskSpec, source: str, split: str, path: str | None, seed: int
) -> list[dict]:
    """Examples of the *source* split `split` (after the task's split_map) from `source`."""
    if source == "hf":
        return _hub_examples(task, split)
    if source == "glue_dir":
        return _glue_tsv_examples(task, split, _require_path(source, path))
    if source in ("jsonl", "csv"):
        return _local_file_examples(task, source, split, _require_path(source, path))
    if source == "demo":
        return demo_examples(task.name, split, DEMO_SPLIT_SIZES.get(split, 0), seed)
    raise UserError(f"unknown data source '{source}'; use one of {', '.join(SOURCES)}")


OFFLINE_DATA = ("give task {task} local data: source glue_dir with path the GLUE root folder (the one holding "
                "RTE/, SST-2/, ...), or source jsonl with a folder of train/validation/test.jsonl (docs/data.md)")


def _require_path(source: str, path: str | None) -> Path:
    if not path:
        raise UserError(f"data source '{source}' needs a path; set the task's data path in the recipe")
    return Path(path)


def _hub_examples(task: TaskSpec, split: str) -> list[dict]:
    if task.hf_path is None:
        raise UserError(f"task '{task.name}' has no hub dataset; use source jsonl or csv with a path")
    import datasets  # heavy; only online users reach this

    with datasets_offline_unless_reachable() as online:
        try:
            dataset = datasets.load_dataset(task.hf_path, task.hf_config, split=split)
        except ConnectionError:
            if online:
                raise
            raise unreachable_dataset(task.hf_path, OFFLINE_DATA.format(task=task.name)) from None
    return [dict(row) for row in dataset]


# --- local GLUE folder (official TSV layout) --------------------------------------------------


def _glue_tsv_examples(task: TaskSpec, split: str, root: Path) -> list[dict]:
    if task.name not in GLUE_TSV_LAYOUTS:
        raise UserError(
            f"task '{task.name}' is not in the GLUE TSV layout; glue_dir serves "
            f"{', '.join(GLUE_TSV_LAYOUTS)}"
        )
    if split not in GLUE_TSV_FILES:
        raise UserError(f"glue_dir has no split '{split}'; it serves {', '.join(GLUE_TSV_FILES)}")
    layout = GLUE_TSV_LAYOUTS[task.name]
    file = root / layout.folder / GLUE_TSV_FILES[split]
    if not file.is_file() and (root / GLUE_TSV_FILES[split]).is_file():
        raise UserError(f"glue_dir path {root} is a task's folder; set path to the GLUE root that holds "
                        f"{layout.folder}/ (here {root.parent})")
    if not file.is_file():
        raise UserError(f"GLUE file {file} is missing; download GLUE into {root} in its TSV layout")
    with file.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if layout.has_header:
        header, rows, first_line = rows[0] if rows else [], rows[1:], 2
        indices = _column_indices(file, header, {field: str(name) for field, name in layout.columns.items()})
    else:  # headerless: the columns are indices
        indices, first_line = {field: int(column) for field, column in layout.columns.items()}, 1
    return [
        _glue_row(task, file, line, row, indices)
        for line, row in enumerate(rows, start=first_line)
        if row
    ]


def _column_indices(file: Path, header: list[str], columns: Mapping[str, str]) -> dict[str, int]:
    missing = [name for name in columns.values() if name not in header]
    if missing:
        raise UserError(f"{file} lacks column(s) {', '.join(missing)}; use the official GLUE files")
    return {field: header.index(name) for field, name in columns.items()}


def _glue_row(task: TaskSpec, file: Path, line: int, row: list[str], indices: Mapping) -> dict:
    if len(row) <= max(indices.values()):
        raise UserError(f"{file}:{line} has {len(row)} columns; re-download the official GLUE files")
    example = {field: row[index] for field, index in indices.items()}
    example["label"] = _label_id(task, example["label"], f"{file}:{line}")
    return example


def _label_id(task: TaskSpec, text: str, where: str) -> int | float:
    """A TSV label as the hub's value: float score, mapped string, or integer id."""
    try:
        if task.is_regression:
            return float(text)
        if task.label_map is not None and text in task.label_map:
            return task.label_map[text]
        return int(text)
    except ValueError:
        raise UserError(f"{where}: label {text!r} is not a label of '{task.name}'; fix the file") from None


# --- local JSONL / CSV files -------------------------------------------------------------------


def _local_file_examples(task: TaskSpec, source: str, split: str, path: Path) -> list[dict]:
    return [row for _, row in task_file_rows(task, source, _local_file(source, split, path))]


def task_file_rows(task: TaskSpec, source: str, file: Path) -> list[tuple[int, dict]]:
    """(line number, row) of a JSONL or CSV file whose every row has the task's template and label fields."""
    try:
        rows = _jsonl_rows(file) if source == "jsonl" else _csv_rows(file)
    except UnicodeDecodeError:
        raise UserError(f"{file} is not UTF-8 text; write {source} as UTF-8") from None
    required = (*task.source_fields, task.label_field)
    for line, row in rows:
        missing = [field for field in required if field not in row]
        if missing:
            raise UserError(
                f"{file}:{line} lacks field(s) {', '.join(missing)} of task '{task.name}'; "
                f"give every row {', '.join(required)}"
            )
    return rows


def _local_file(source: str, split: str, path: Path) -> Path:
    if path.is_dir():
        file = path / f"{split}.{source}"
        if not file.is_file():
            raise UserError(f"data file {file} is missing; add it or point the path elsewhere")
        return file
    if not path.is_file():
        raise UserError(f"data path {path} does not exist; point the recipe at a file or directory")
    if split != "train":
        raise UserError(
            f"single file {path} only serves split 'train', not '{split}'; "
            f"use a directory with train.{source}, validation.{source} and test.{source}"
        )
    return path


def _jsonl_rows(file: Path) -> list[tuple[int, dict]]:
    rows = []
    with file.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                raise UserError(f"{file}:{line} is not valid JSON ({error.msg}); fix that line") from None
            if not isinstance(row, dict):
                raise UserError(f"{file}:{line} is not a JSON object; write one object per line")
            rows.append((line, row))
    return rows


def _csv_rows(file: Path) -> list[tuple[int, dict]]:
    with file.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return [(reader.line_num, _drop_missing(row)) for row in reader]


def _drop_missing(row: dict) -> dict:
    """A CSV row without the None values DictReader gives to cells absent from a short line."""
    return {key: value for key, value in row.items() if value is not None and key is not None}
