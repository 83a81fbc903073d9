"""`export --tasks a,b,c` (or `--all`): one ONNX export for many materialized tasks of a run.

exports/multitask/onnx[-precision]/ holds the single-task export's graphs (same names, inputs and
outputs) with one more input, `task_ids` [batch] int64: each example's row in the task table
(`tasks.json`, `contracts.task_table.TaskTable`). Each adapter's tensors for all tasks are stacked
constants [T, ...] (`stack`, `export.task_tables`) that every example gathers its row of, so one batch
mixes tasks; the backbone and the run's trained layer norms are stored once. The classify head's scores
are [batch, K] (K: the most labels of any task), -inf past an example's own task's labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hyperexport.contracts import publish
from hyperexport.contracts.export import ExportManifest, write_export_manifest
from hyperexport.contracts.manifest import file_hashes, relative_path, sha256_file
from hyperexport.contracts.names import (
    CLASSIFY_GRAPH,
    DECODER_GRAPH,
    DECODER_WITH_PAST_GRAPH,
    ENCODER_GRAPH,
    MULTITASK_EXPORT,
    TOKENIZER_DIR,
    default_export_dir,
)
from hyperexport.contracts.run import RunFolder
from hyperexport.contracts.task import TaskFolder
from hyperexport.contracts.task_table import TaskEntry, TaskSource, TaskTable
from hyperexport.errors import UserError
from hyperexport.export.onnx import (
    check_options,
    check_tokenizer,
    finish_graphs,
    io_spec,
    refuse_existing,
    run_tokenizer,
)
from hyperexport.export.task_tables import LABEL_TABLE, TABLE_PREFIX
from hyperexport.options import DEFAULT_HEAD, DEFAULT_OPSET, DEFAULT_PRECISION, ExportHead, Precision

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, T5ForConditionalGeneration

# which tables each graph holds: the encoder's adapters, the decoder's, or all of them and the labels
GRAPH_STACKS = {ENCODER_GRAPH: ("encoder",), DECODER_GRAPH: ("decoder",), DECODER_WITH_PAST_GRAPH: ("decoder",),
                CLASSIFY_GRAPH: ("encoder", "decoder")}


def export_multitask(run: str | Path | None = None, *, tasks: Sequence[str] | None = None,
                     head: ExportHead = DEFAULT_HEAD, opset: int = DEFAULT_OPSET, output: Path | None = None,
                     overwrite: bool = False, precision: Precision = DEFAULT_PRECISION) -> Path:
    """Export the materialized `tasks` (default: all of the run's) of `run` (default runs/latest) as one
    multi-task export, by default exports/multitask/onnx[-precision]/."""
    from hyperexport.fold import load_task_backbone, read_task

    check_options(head, precision)
    run_folder = RunFolder.resolve(run)
    names = list(tasks) if tasks else list(run_folder.manifest().tasks)
    check_task_names(names, run_folder)
    destination = Path(output) if output is not None else default_export_dir(MULTITASK_EXPORT, "onnx", precision)
    refuse_existing(destination, overwrite)
    sources = [read_task(run_folder.task_dir(name)) for name in names]
    folders, tensors = [folder for folder, _ in sources], [tensors for _, tensors in sources]
    shared = check_same_source(folders, tensors)
    check_tokenizer(run_folder, head)
    tokenizer = run_tokenizer(run_folder)
    with publish.building(destination) as tmp:
        labels = None if head == "generate" or tokenizer is None else [task_labels(tokenizer, f) for f in folders]
        build_task_graphs(load_task_backbone(folders[0]), tensors, labels, folders[0].facts.adapter.activation,
                          head, precision, opset, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / TOKENIZER_DIR)
        TaskTable(tuple(task_entry(folder, destination) for folder in folders), *shared).write(tmp)
        io_spec(tmp).write(tmp)
        write_export_manifest(tmp, ExportManifest(
            format="onnx", head=head, precision=precision, opset=opset, task=MULTITASK_EXPORT,
            source_run=relative_path(run_folder.path, destination), source_task_sha256=task_hashes(folders),
            backbone=folders[0].manifest.backbone))
    return destination


def build_task_graphs(backbone: T5ForConditionalGeneration, tensors: Sequence[dict[str, torch.Tensor]],
                      labels: Sequence[torch.Tensor] | None, activation: str, head: str, precision: str, opset: int,
                      folder: Path) -> None:
    """The multi-task graphs of `head` into `folder`: `backbone` stacked with the tasks' adapters (task t:
    `tensors[t]`, its label token ids `labels[t]` [K_t, L_t] for the classify head), cast to `precision`."""
    from hyperexport.export.multitask_classify import TaskLabelScorer, export_task_classify_graph
    from hyperexport.export.multitask_generate import export_task_generate_graphs
    from hyperexport.export.precision import cast_to_precision
    from hyperexport.export.task_tables import module_tables, name_tables, padded_labels, sentinel_tables, write_tables
    from hyperexport.stack import stack_tasks

    stacked = stack_tasks(backbone, tensors, activation)
    cast_to_precision(stacked.model, precision)
    scorer = TaskLabelScorer(stacked, padded_labels(labels)) if labels is not None else None
    root = scorer if scorer is not None else stacked.model
    graphs = []
    with sentinel_tables(root, stacked.model.config.vocab_size) as sentinels:
        if head in ("generate", "both"):
            export_task_generate_graphs(stacked, folder, opset)
            graphs += [ENCODER_GRAPH, DECODER_GRAPH, DECODER_WITH_PAST_GRAPH]
        if scorer is not None and head in ("classify", "both"):
            export_task_classify_graph(scorer, folder / CLASSIFY_GRAPH, opset)
            graphs.append(CLASSIFY_GRAPH)
    tables = module_tables(root)  # the real values again
    for graph in graphs:
        name_tables(folder / graph, sentinels, graph_tables(graph, tables))
        write_tables(folder / graph, tables)
    finish_graphs(folder, precision, quantize=quantize_task_graphs)


def quantize_task_graphs(folder: Path) -> None:
    """int8: ONNX Runtime's dynamic quantization of the MatMuls with constant weights (the backbone's; the
    gathered adapter rows are no constants and stay float), the task tables stored as fp16."""
    from hyperexport.export.quantize import quantize_folder
    from hyperexport.export.task_tables import store_tables_half

    quantize_folder(folder)
    for graph in sorted(folder.glob("*.onnx")):
        store_tables_half(graph)


def graph_tables(graph: str, tables: dict[str, torch.Tensor]) -> set[str]:
    """The names of the tables `graph` holds."""
    stacks = tuple(f"{TABLE_PREFIX}{stack}." for stack in GRAPH_STACKS[graph])
    return {name for name in tables if name.startswith(stacks) or (graph == CLASSIFY_GRAPH and name == LABEL_TABLE)}


def check_task_names(names: Sequence[str], run_folder: RunFolder) -> None:
    known = run_folder.manifest().tasks
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(f"task '{unknown[0]}' is not in the run {run_folder.name}: its tasks are {', '.join(known)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"task '{repeated[0]}' is named twice: list each task once")


def check_same_source(folders: Sequence[TaskFolder],
                      tensors: Sequence[dict[str, torch.Tensor]]) -> tuple[str, str | None]:
    """The shared facts of the tasks (trained layer norms, backbone weights), which must agree: the graphs
    hold them once."""
    from hyperexport.stack import shared_digest

    first = folders[0]
    for folder, task_tensors in zip(folders[1:], tensors[1:]):
        if folder.manifest.backbone != first.manifest.backbone or backbone_digest(folder) != backbone_digest(first):
            raise UserError(f"task '{folder.facts.task}' was materialized from another backbone than "
                            f"'{first.facts.task}': export tasks of one run together")
        if shared_digest(task_tensors) != shared_digest(tensors[0]):
            raise UserError(f"tasks '{first.facts.task}' and '{folder.facts.task}' carry different trained layer "
                            "norms (materialized from different trainings): materialize them again from one run")
    return shared_digest(tensors[0]), backbone_digest(first)


def backbone_digest(folder: TaskFolder) -> str | None:
    """sha256 over the files of the task's saved backbone weights; None for a pretrained backbone."""
    import hashlib

    weights = folder.backbone_weights
    if weights is None:
        return None
    digest = hashlib.sha256()
    for name, file_digest in file_hashes(weights).items():
        digest.update(f"{name} {file_digest}\n".encode())
    return digest.hexdigest()


def task_labels(tokenizer: PreTrainedTokenizerBase, folder: TaskFolder) -> torch.Tensor:
    """The task's label token ids [K, L] (`classify.label_token_ids`)."""
    from hyperexport.export.classify import label_token_ids

    return label_token_ids(tokenizer, folder.facts.labels)


def task_entry(folder: TaskFolder, destination: Path) -> TaskEntry:
    return TaskEntry(folder.facts, TaskSource(
        task_dir=relative_path(folder.path, destination), adapters_sha256=sha256_file(folder.adapters_file),
        source_run=relative_path(folder.run_dir, destination),
        source_checkpoint_sha256=folder.manifest.source_checkpoint_sha256))


def task_hashes(folders: Sequence[TaskFolder]) -> dict[str, str]:
    """sha256 of every file of the tasks' folders, as `<task>/<file>`."""
    return {f"{folder.facts.task}/{name}": digest for folder in folders
            for name, digest in file_hashes(folder.path).items()}
