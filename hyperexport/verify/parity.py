"""`verify`: the same inputs through every runner, compared with the hypernetwork model.

Inputs: the task's evaluation (test) split and a seeded batch of random token ids. Runners: PyTorch
with the hypernetwork (the reference, from the run), PyTorch folded (from the materialized task),
ONNX Runtime (the export; and its one-graph generator, where it has one). Per runner and output: max
|delta| against the export precision's tolerance (`TOLERANCES`; fp32: logits and scores 1e-4, greedy tokens
identical, task metric equal); NaN/Inf anywhere fails. The report goes to `<export>/parity_report.json`.
"""

from __future__ import annotations

from pathlib import Path

from hyperexport.contracts.export import ExportFolder
from hyperexport.errors import UserError
from hyperexport.export.tensorrt.compat import export_compatibility
from hyperexport.options import DEFAULT_VERIFY_EXAMPLES
from hyperexport.verify.compare import (  # noqa: F401 (public)
    REFERENCE,
    TENSORRT,
    TENSORRT_TOLERANCES,
    TOLERANCES,
    check_same_backbone,
    export_ids,
    generate_graph_runners,
    onnxruntime_runner,
    task_parity,
    write_report,
)
from hyperexport.verify.runners import ExportRunner


def verify(export_dir: str | Path, *, run: str | Path | None = None, max_examples: int = DEFAULT_VERIFY_EXAMPLES,
           tensorrt_check: bool = False) -> dict:
    """Compare every runner with the hypernetwork model; write and return the parity report. TensorRT
    engine folders (and ONNX exports with `tensorrt_check`) also get the CPU TensorRT-compatibility check."""
    from hyperexport.fold import load_folded_task
    from hyperexport.model.trained import load_run

    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise UserError(f"no export at {export_dir}: run `hyperexport export --task <task>`")
    export = ExportFolder.open(export_dir)
    if export.is_multitask:
        from hyperexport.verify.multitask import verify_multitask

        return verify_multitask(export, run, max_examples, tensorrt_check)
    manifest = export.manifest
    compatibility = export_compatibility(export) if export.is_engine or tensorrt_check else None
    not_run: list[dict]
    if export.is_engine:
        export_runners, not_run = [_engine_runner(export)], []  # no GPU or foreign plans: fail first
    else:
        onnxruntime, not_run = onnxruntime_runner(export)
        export_runners = [onnxruntime, *generate_graph_runners(export)] if onnxruntime is not None else []
    loaded = load_run(run if run is not None else export.source_run)
    check_same_backbone(loaded, export)
    task = manifest.task
    folded, facts = load_folded_task(loaded.folder.task_dir(task))
    comparisons, metrics = task_parity(loaded, task, folded, facts, export_runners, manifest.precision, max_examples)
    report = {"export": str(export_dir), "run": str(loaded.path), "task": task, "reference": REFERENCE,
              "precision": manifest.precision, "comparisons": comparisons, "metrics": metrics, "not_run": not_run,
              "passed": all(c["passed"] for c in comparisons + metrics) and not not_run}
    if compatibility is not None:
        report["tensorrt_compatibility"] = compatibility
        report["passed"] = report["passed"] and compatibility["passed"]
    return write_report(export_dir, report)


def _engine_runner(export: ExportFolder) -> ExportRunner:
    from hyperexport.runtime.tensorrt import TensorRTBackend

    return ExportRunner(TENSORRT, TensorRTBackend(export.path), export_ids(export))
