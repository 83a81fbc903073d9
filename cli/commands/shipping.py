"""Commands that ship a trained run: materialize, export, verify, predict."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hyperexport.contracts.export import require_export
from hyperexport.errors import UserError
from hyperexport.options import (
    DEFAULT_ENGINE_BATCH,
    DEFAULT_ENGINE_SEQ,
    DEFAULT_FORMAT,
    DEFAULT_HEAD,
    DEFAULT_OPSET,
    DEFAULT_PRECISION,
    DEFAULT_VERIFY_EXAMPLES,
    ExportHead,
    Format,
    Precision,
)
from hyperexport_cli.app import ExportArg, JsonOpt, OverwriteOpt, RunOpt, app
from hyperexport_cli.errors import fail, user_errors
from hyperexport_cli.output import print_json, print_parity, print_predictions


@app.command(epilog="Example: hyperexport materialize --task rte  |  hyperexport materialize --run runs/demo --all")
@user_errors
def materialize(
    run: RunOpt = None,
    task: Annotated[list[str] | None, typer.Option(help="Task to materialize (repeatable).")] = None,
    all_tasks: Annotated[bool, typer.Option("--all", help="Materialize every task of the run.")] = False,
    output: Annotated[Path | None, typer.Option(help="Task folder; default <run>/tasks/<task>.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Evaluate the hypernetwork once per task and keep that task's adapter weights."""
    from hyperexport.materialize import materialize as materialize_tasks

    if not task and not all_tasks:
        fail("name a task with --task, or pass --all to materialize every task of the run")
    for folder in materialize_tasks(run, tasks=None if all_tasks else task, output=output, overwrite=overwrite):
        typer.echo(f"materialized: {folder}")


@app.command(epilog="Example: hyperexport export --task rte --format onnx --head both  |  "
                     "hyperexport export --tasks rte,sst2,mrpc  |  hyperexport export --add-task scitail --to "
                     "exports/multitask/onnx  |  hyperexport export --task rte --precision int8 --generate-graph  |  "
                     "hyperexport export --task rte --format tensorrt --precision bf16")
@user_errors
def export(
    task: Annotated[str | None, typer.Option(help="A materialized task of the run.")] = None,
    tasks: Annotated[str | None, typer.Option(
        help="Several materialized tasks, comma-separated: one multi-task export whose graphs take task_ids.")] = None,
    all_tasks: Annotated[bool, typer.Option("--all", help="Every task of the run in one multi-task export.")] = False,
    add_task: Annotated[str | None, typer.Option(
        help="Add this materialized task to the multi-task export --to (its tables only, no re-trace).")] = None,
    to: Annotated[Path | None, typer.Option(help="--add-task: the multi-task export folder.")] = None,
    run: RunOpt = None,
    format: Annotated[Format, typer.Option(help="onnx, or tensorrt (engines, needs an NVIDIA GPU).")] = DEFAULT_FORMAT,
    head: Annotated[ExportHead, typer.Option(
        help="Which graphs: the generate loop's, the classify scorer, or both.")] = DEFAULT_HEAD,
    precision: Annotated[Precision, typer.Option(
        help="fp32; fp16 (wo kept fp32) or bf16 for GPUs (bf16 needs a GPU runtime); int8 (onnx only: "
             "dynamic quantization, CPU).")] = DEFAULT_PRECISION,
    opset: Annotated[int, typer.Option(min=14, help="ONNX opset.")] = DEFAULT_OPSET,
    batch: Annotated[str, typer.Option(help="tensorrt: batch profile min:opt:max.")] = DEFAULT_ENGINE_BATCH,
    seq: Annotated[str, typer.Option(help="tensorrt: source-length profile min:opt:max.")] = DEFAULT_ENGINE_SEQ,
    timing_cache: Annotated[Path | None, typer.Option(
        help="tensorrt: timing cache file to reuse and update across tasks.")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Export folder; default exports/<task>/<format>[-<precision>]/ "
             "(exports/multitask/... for several).")] = None,
    overwrite: OverwriteOpt = False,
    generate_graph: Annotated[bool, typer.Option(
        "--generate-graph", help="onnx, one task: also generate_model.onnx, the whole greedy loop in one ONNX "
                                 "Runtime graph.")] = False,
) -> None:
    """Export a materialized task as ONNX graphs with no hypernetwork inside, or as TensorRT engines built from them;
    or several tasks as one ONNX export whose graphs take each example's task id."""
    from hyperexport.export.request import export_request

    request = export_request(task, tasks, all_tasks, add_task, to, format)
    if generate_graph and (request != "single" or format != "onnx"):
        raise UserError("--generate-graph is an ONNX Runtime graph of one task: export it with --task T --format "
                        "onnx (TensorRT engines and multi-task exports run the encoder and decoder graphs)")
    if request == "add":
        from hyperexport.export.add_task import add_task as add

        assert add_task is not None and to is not None  # export_request checked both
        typer.echo(f"added {add_task}: {add(to, add_task, run)}")
        return
    if request == "multitask":
        from hyperexport.export.multitask import export_multitask

        names = None if all_tasks or tasks is None else [name.strip() for name in tasks.split(",")]
        folder = export_multitask(run, tasks=names, head=head, opset=opset, output=output, overwrite=overwrite,
                                  precision=precision)
    elif format == "tensorrt":
        from hyperexport.export.tensorrt.build import export_tensorrt

        assert task is not None  # export_request refused a request without one

        folder = export_tensorrt(run, task=task, head=head, precision=precision, batch=batch, seq=seq, output=output,
                                 overwrite=overwrite, opset=opset, timing_cache=timing_cache)
    else:
        from hyperexport.export.onnx import export_onnx

        assert task is not None  # export_request refused a request without one
        folder = export_onnx(run, task=task, head=head, opset=opset, output=output, overwrite=overwrite,
                             precision=precision, generate_graph=generate_graph)
    typer.echo(f"exported: {folder}")


@app.command(epilog="Example: hyperexport verify exports/rte/onnx --json")
@user_errors
def verify(
    export_dir: ExportArg,
    run: Annotated[Path | None, typer.Option(help="Run folder; default the one the export came from.")] = None,
    max_examples: Annotated[int, typer.Option(min=1, help="Evaluation examples to run.")] = DEFAULT_VERIFY_EXAMPLES,
    tensorrt_check: Annotated[bool, typer.Option(
        "--tensorrt-check", help="Also check the ONNX graphs for TensorRT (always on for tensorrt exports).")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Compare PyTorch (hypernetwork, folded) and the export (ONNX Runtime or TensorRT) on the same inputs; exit 1
    on any mismatch or when a runner the export needs is missing here (bf16 graphs need a GPU)."""
    from hyperexport.verify.parity import verify as verify_export

    report = verify_export(export_dir, run=run, max_examples=max_examples, tensorrt_check=tensorrt_check)
    print_json(report) if json_output else print_parity(report)
    if not report["passed"]:
        raise typer.Exit(code=1)


@app.command(epilog="Example: hyperexport predict exports/rte/onnx "
                     "'{\"sentence1\": \"a cat sings\", \"sentence2\": \"a cat\"}'  |  "
                     "hyperexport predict exports/rte/onnx --input examples.jsonl --json  |  "
                     "hyperexport predict rte --url 127.0.0.1:8001 --input examples.jsonl")
@user_errors
def predict(
    export_dir: Annotated[Path, typer.Argument(
        help="An export folder (hyperexport export); with --url, the name the server serves it as (its task).",
        show_default=False)],
    text: Annotated[str | None, typer.Argument(
        help="One example: a JSON object of the task's fields, or the plain text of a one-field task.",
        show_default=False)] = None,
    input_file: Annotated[Path | None, typer.Option("--input", help="JSONL file, one JSON object per line.")] = None,
    task: Annotated[str | None, typer.Option(
        help="Multi-task export: the task of every example (else each names its own in a `task` field).")] = None,
    url: Annotated[str | None, typer.Option(
        help="Send the examples to a `hyperexport serve` server instead: HOST:PORT (gRPC) or http://HOST:PORT.",
        show_default=False)] = None,
    json_output: JsonOpt = False,
) -> None:
    """Label new examples with an export folder (ONNX Runtime on the CPU, TensorRT plans on a GPU), or with a
    server's models (--url); warns on truncated inputs (a server refuses them)."""
    if url is not None:
        from hyperexport.serve.remote import predict_remote

        results = predict_remote(url, str(export_dir), text=text, input_file=input_file, task=task)
    else:
        require_export(export_dir)  # no export: one line before numpy and ONNX Runtime load
        from hyperexport.runtime.predict import predict as predict_examples

        results = predict_examples(export_dir, text=text, input_file=input_file, task=task)
    print_json(results) if json_output else print_predictions(results)
