"""`verify` of a multi-task export: each task against the PyTorch hypernetwork model, and a mixed batch
against each task's single-task graphs.

- Per task (one row of the report each): the task's evaluation split and a random batch through the
  reference (the hypernetwork model of the run the task came from, with the task's id), the folded
  single-task model, and the export's graphs with every `task_ids` the task's row; outputs and the task
  metric compared as for a single-task export (`compare.task_parity`, same tolerances).
- Mixed batch: evaluation rows of every task (random rows for a run without a tokenizer), shuffled, in one
  batch of mixed `task_ids`. Each task's rows must equal what the task's own single-task graphs give on the
  same rows of the same padded batch; those graphs are exported here (a temporary folder) from the task's
  materialized folder at the export's precision. fp32: scores and logits within 1e-5, tokens identical.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from hyperexport.contracts.export import ExportFolder
from hyperexport.contracts.manifest import resolved_path, sha256_file
from hyperexport.contracts.task import TaskFolder
from hyperexport.contracts.task_table import TaskEntry, TaskTable
from hyperexport.errors import UserError
from hyperexport.export.tensorrt.compat import export_compatibility
from hyperexport.verify.compare import (
    REFERENCE,
    TOLERANCES,
    check_same_backbone,
    export_ids,
    max_abs_diff,
    onnxruntime_runner,
    task_parity,
    token_mismatch,
    write_report,
)
from hyperexport.verify.compare import tolerance as bounded
from hyperexport.verify.runners import ExportRunner, ParityInputs

if TYPE_CHECKING:
    from hyperexport.contracts.export import GenerationIds
    from hyperexport.contracts.task import TaskFacts
    from hyperexport.model.trained import TrainedRun

MIXED_ROWS_PER_TASK = 4
SINGLE_TASK = "single_task_graphs"
# ONNX Runtime against ONNX Runtime: only the padding differs (a mixed batch pads to its longest row of any
# task), which changes the order of fp32 sums: 1e-5 plus 2e-6 of the largest value (measured: 1.5e-5 on a
# 20-step demo run's logits)
MIXED_TOLERANCES = {**TOLERANCES, "fp32": {"logits": 1e-5, "scores": 1e-5, "tokens": 0.0, "relative": 2e-6}}


def verify_multitask(export: ExportFolder, run: str | Path | None, max_examples: int, tensorrt_check: bool) -> dict:
    """The parity report of a multi-task export (see the module doc), written to its folder."""
    table = export.task_table
    compatibility = export_compatibility(export) if tensorrt_check else None
    onnxruntime, not_run = onnxruntime_runner(export)
    runs: dict[Path, TrainedRun] = {}
    loaded = [_run_of(export, entry, run, runs) for entry in table.tasks]
    folders = [_task_folder(export, entry) for entry in table.tasks]
    tasks = [_task_report(export, row, loaded[row], folders[row], onnxruntime, max_examples)
             for row in range(len(table.tasks))]
    mixed = None if onnxruntime is None else _mixed_report(export, table, loaded, folders, onnxruntime)
    checks = [task["passed"] for task in tasks] + ([mixed["passed"]] if mixed is not None else [])
    report = {"export": str(export.path), "reference": REFERENCE, "precision": export.manifest.precision,
              "tasks": tasks, "mixed_batch": mixed, "not_run": not_run, "passed": all(checks) and not not_run}
    if compatibility is not None:
        report["tensorrt_compatibility"] = compatibility
        report["passed"] = report["passed"] and compatibility["passed"]
    return write_report(export.path, report)


def _run_of(export: ExportFolder, entry: TaskEntry, run: str | Path | None, runs: dict) -> TrainedRun:
    """The run a task came from (or `run` for all), loaded once per folder."""
    from hyperexport.model.trained import load_run

    path = Path(run).resolve() if run is not None else resolved_path(export.path, entry.source.source_run)
    if path not in runs:
        runs[path] = load_run(path)
        check_same_backbone(runs[path], export)
    runs[path].check_tasks([entry.facts.task])
    return runs[path]


def _task_folder(export: ExportFolder, entry: TaskEntry) -> TaskFolder:
    """The materialized task a row came from, refused if it was materialized again since the export."""
    folder = TaskFolder.open(resolved_path(export.path, entry.source.task_dir))
    if sha256_file(folder.adapters_file) != entry.source.adapters_sha256:
        raise UserError(f"{folder.path} was materialized again after {export.path} was exported (its adapters "
                        f"differ from the export's row): export the tasks again")
    return folder


def _task_report(export: ExportFolder, row: int, loaded: TrainedRun, folder: TaskFolder,
                 onnxruntime: ExportRunner | None, max_examples: int) -> dict:
    from hyperexport.fold import load_folded_task

    task = folder.facts.task
    folded, facts = load_folded_task(folder.path)
    runners = [onnxruntime] if onnxruntime is not None else []
    comparisons, metrics = task_parity(loaded, task, folded, facts, runners, export.manifest.precision,
                                       max_examples, task_row=row)
    return {"task": task, "row": row, "run": str(loaded.path), "comparisons": comparisons, "metrics": metrics,
            "passed": all(check["passed"] for check in comparisons + metrics)}


def _mixed_report(export: ExportFolder, table: TaskTable, loaded: list, folders: list[TaskFolder],
                  onnxruntime: ExportRunner) -> dict:
    inputs = mixed_inputs(table, loaded)
    task_ids = inputs.task_ids
    assert task_ids is not None  # the mixed batch names each row's task
    with onnxruntime:
        mixed = onnxruntime.infer(inputs)
    tolerance = MIXED_TOLERANCES[export.manifest.precision]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hyperexport-verify-") as scratch:
        for row, folder in enumerate(folders):
            picked = (task_ids == row).nonzero().squeeze(1)
            single = _single_task_outputs(export, folder, _rows(inputs, picked), Path(scratch) / str(row))
            rows += _mixed_rows(folder.facts, {name: value[picked.numpy()] for name, value in mixed.items()},
                                single, tolerance, onnxruntime.ids)
    return {"rows": int(task_ids.shape[0]), "task_ids": task_ids.tolist(), "comparisons": rows,
            "passed": all(check["passed"] for check in rows)}


def mixed_inputs(table: TaskTable, loaded: list) -> ParityInputs:
    """Up to `MIXED_ROWS_PER_TASK` evaluation rows of every task, shuffled (seeded), padded into one batch."""
    from hyperexport.runtime.multitask import task_token_batch
    from hyperexport.training.task_data import load_task_data

    picked = []  # (row, source, target)
    for row, (entry, run) in enumerate(zip(table.tasks, loaded)):
        if run.tokenizer is None:
            return _random_mixed(table, run)
        examples = load_task_data(run.recipe, splits=("test",))[entry.facts.task].test[:MIXED_ROWS_PER_TASK]
        picked += [(row, example.source, example.target) for example in examples]
    order = np.random.default_rng(0).permutation(len(picked))
    picked = [picked[index] for index in order]
    facts = [table.tasks[row].facts for row, _, _ in picked]
    tokenizer, backbone = loaded[0].tokenizer, loaded[0].model.backbone
    sources = task_token_batch(tokenizer, [source for _, source, _ in picked], [f.max_source_length for f in facts])
    targets = task_token_batch(tokenizer, [target for _, _, target in picked], [f.max_new_tokens for f in facts])
    labels = torch.from_numpy(targets["input_ids"]).masked_fill(torch.from_numpy(targets["attention_mask"]) == 0, -100)
    return ParityInputs(torch.from_numpy(sources["input_ids"]), torch.from_numpy(sources["attention_mask"]),
                        backbone._shift_right(labels), torch.empty(0, 1, dtype=torch.long),
                        max(f.max_new_tokens for f in facts), torch.tensor([row for row, _, _ in picked]))


def _random_mixed(table: TaskTable, run: TrainedRun) -> ParityInputs:
    """Random token rows, two per task, for runs without a tokenizer (no text to read)."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.arange(len(table.tasks)).repeat(2)[torch.randperm(2 * len(table.tasks), generator=generator)]
    config = run.model.backbone.config
    input_ids = torch.randint(3, config.vocab_size, (rows.shape[0], 12), generator=generator)
    assert config.eos_token_id is not None  # T5's config sets it
    input_ids[:, -1] = config.eos_token_id
    decoder_ids = torch.randint(3, config.vocab_size, (rows.shape[0], 3), generator=generator)
    return ParityInputs(input_ids, torch.ones_like(input_ids), decoder_ids, torch.empty(0, 1, dtype=torch.long),
                        max(entry.facts.max_new_tokens for entry in table.tasks), rows)


def _rows(inputs: ParityInputs, picked: torch.Tensor) -> ParityInputs:
    """The picked rows of the batch, as they are (same padding), without task ids (a single-task graph's)."""
    return replace(inputs, input_ids=inputs.input_ids[picked], attention_mask=inputs.attention_mask[picked],
                   decoder_input_ids=inputs.decoder_input_ids[picked], task_ids=None)


def _single_task_outputs(export: ExportFolder, folder: TaskFolder, inputs: ParityInputs, scratch: Path) -> dict:
    """The task's single-task graphs (exported into `scratch` as `export` would) on `inputs`."""
    from hyperexport.export.classify import label_token_ids
    from hyperexport.export.onnx import write_graphs
    from hyperexport.fold import load_folded_task
    from hyperexport.model.build import load_tokenizer
    from hyperexport.runtime.backends import OnnxRuntimeBackend

    manifest = export.manifest
    model, facts = load_folded_task(folder.path)
    labels = None if "classify" not in export.heads else label_token_ids(load_tokenizer(str(export.tokenizer_dir)),
                                                                        facts.labels)
    scratch.mkdir()
    write_graphs(model, labels, manifest.head, manifest.precision, manifest.opset, scratch)
    runner = ExportRunner(SINGLE_TASK, OnnxRuntimeBackend(scratch), export_ids(export))
    with runner:
        return runner.infer(replace(inputs, max_new_tokens=facts.max_new_tokens))


def _mixed_rows(facts: TaskFacts, mixed: dict[str, np.ndarray], single: dict[str, np.ndarray], tolerance: dict,
                ids: GenerationIds | None) -> list[dict]:
    """One comparison per output of the task's rows: the mixed batch's against its single-task graphs'."""
    from hyperexport.runtime.multitask import cut_rows

    found = []
    for name, expected in single.items():
        value = mixed[name]
        if name == "scores":
            value = value[:, :len(facts.labels)]
        if name == "tokens":
            assert ids is not None  # the generate head's exports have generation ids
            value = cut_rows(value, [facts.max_new_tokens] * len(value), ids.pad_token_id)
            diff = token_mismatch(value, expected)
        else:
            diff = max_abs_diff(value, expected)
        finite = bool(np.isfinite(value).all() and np.isfinite(expected).all()) if name != "tokens" else True
        bound = bounded(tolerance, name, expected)
        found.append({"task": facts.task, "output": name, "rows": len(value), "max_abs_diff": diff,
                      "tolerance": bound, "finite": finite, "passed": finite and diff <= bound})
    return found
