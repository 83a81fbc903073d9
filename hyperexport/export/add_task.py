"""`export --add-task T --to EXPORT`: a task materialized later joins a multi-task export, with no new trace.

Only the task tables change (`export.task_tables`): every graph's `task_table.*` initializers get the new
task's row (the label table may widen to more labels or a longer label, padded), and tasks.json one more
entry; the graphs' nodes and every other constant stay as they are, so the other tasks' outputs stay
identical bit for bit. The task must come from the export's backbone with the same trained layer norms,
which the graphs hold once: a task of the export's run, or one `hyperexport adapt` learned on it (adapt
leaves the layer norms frozen unless `--tune layer-norms`). The folder is rebuilt beside itself and swapped
in whole; its parity report is dropped (verify it again).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import torch

from hyperexport.contracts import publish
from hyperexport.contracts.export import ExportFolder, write_export_manifest
from hyperexport.contracts.names import MANIFEST_FILE, PARITY_REPORT_FILE
from hyperexport.contracts.run import RunFolder
from hyperexport.contracts.task import TaskFolder
from hyperexport.contracts.task_table import TaskTable
from hyperexport.errors import UserError
from hyperexport.export.onnx import io_spec
from hyperexport.export.task_tables import LABEL_TABLE, TABLE_PREFIX, padded_labels
from hyperexport.export.weights import store_weights_once

_FIX = "add a task of the export's run, or of a run `hyperexport adapt` made from it"


def add_task(export_dir: str | Path, task: str, run: str | Path | None = None) -> Path:
    """Add the materialized `task` of `run` (default runs/latest) to the multi-task export at `export_dir`."""
    from hyperexport.export.multitask import task_entry, task_hashes, task_labels
    from hyperexport.export.task_tables import task_rows
    from hyperexport.fold import read_task
    from hyperexport.model.build import load_tokenizer

    export = ExportFolder.open(export_dir)
    if export.is_engine:
        raise UserError(f"{export.path} holds TensorRT engines: add tasks to a multi-task ONNX export")
    table = export.task_table  # a single-task export is refused here
    if task in table.names:
        raise UserError(f"task '{task}' is already in {export.path}: add another task, or export the tasks again")
    folder, tensors = read_task(RunFolder.resolve(run).task_dir(task))
    check_joins(export, table, folder, tensors)
    labels = None
    if "classify" in export.heads:
        labels = task_labels(load_tokenizer(str(export.tokenizer_dir)), folder)
    rows = task_rows(tensors, labels)
    with publish.building(export.path) as tmp:
        _copy_folder(export.path, tmp)
        for graph in sorted(tmp.glob("*.onnx")):
            _append_rows(graph, rows)
        store_weights_once(tmp)  # the graphs were saved with their weights inline: one shared file again
        TaskTable(table.tasks + (task_entry(folder, export.path),), table.layer_norms_sha256,
                  table.backbone_weights_sha256).write(tmp)
        io_spec(tmp).write(tmp)
        hashes = {**export.manifest.source_task_sha256, **task_hashes([folder])}
        write_export_manifest(tmp, replace(export.manifest, source_task_sha256=hashes))
    return export.path


def check_joins(export: ExportFolder, table: TaskTable, folder: TaskFolder, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse a task the export's graphs cannot hold: another backbone, other trained layer norms, another
    adapter activation or shape."""
    from hyperexport.export.multitask import backbone_digest
    from hyperexport.stack import shared_digest

    task, made_from = folder.facts.task, export.manifest.backbone
    if made_from is not None and folder.manifest.backbone != made_from:
        raise UserError(f"task '{task}' was materialized from backbone '{folder.manifest.backbone.config}', the export "
                        f"holds '{made_from.config}': {_FIX}")
    if backbone_digest(folder) != table.backbone_weights_sha256:
        raise UserError(f"task '{task}' was materialized from other backbone weights than the export's: {_FIX}")
    if shared_digest(tensors) != table.layer_norms_sha256:
        raise UserError(f"task '{task}' carries other trained layer norms than the export's (another training, or "
                        f"adapt --tune layer-norms): {_FIX}")
    theirs, ours = folder.facts.adapter, table.tasks[0].facts.adapter
    if (theirs.activation, theirs.variant) != (ours.activation, ours.variant):
        raise UserError(f"task '{task}' has {theirs.variant} adapters with {theirs.activation}, the export "
                        f"{ours.variant} with {ours.activation}: {_FIX}")


def _copy_folder(source: Path, target: Path) -> None:
    """Everything of the export but what the addition rewrites or makes stale (manifest, parity report)."""
    for path in source.iterdir():
        if path.name in (MANIFEST_FILE, PARITY_REPORT_FILE):
            continue
        if path.is_dir():
            shutil.copytree(path, target / path.name)
        else:
            shutil.copy2(path, target / path.name)


def _append_rows(graph: Path, rows: dict[str, torch.Tensor]) -> None:
    from hyperexport.export.task_tables import read_tables, write_tables

    tables = read_tables(graph)
    if not tables:
        raise UserError(f"{graph.name} holds no {TABLE_PREFIX}* tables: export the tasks again with this version")
    write_tables(graph, {name: appended(name, table, rows[name]) for name, table in tables.items()})


def appended(name: str, table: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """`table` [T, ...] with `row` as row T; the label table [T, K, L] padded to fit a wider row."""
    if name == LABEL_TABLE:
        return padded_labels([*table, row])
    if tuple(row.shape) != tuple(table.shape[1:]):
        raise UserError(f"the new task's {name[len(TABLE_PREFIX):]} has shape {tuple(row.shape)}, the export's "
                        f"{tuple(table.shape[1:])}: {_FIX}")
    return torch.cat([table, row.to(table.dtype).unsqueeze(0)])
