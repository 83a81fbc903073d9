"""The `hyperexport` command line: parse arguments, call one library function, print the result."""

from __future__ import annotations

import os

# Before torch loads: OpenMP threads that spin while waiting make small CPU matmuls ~100x slower as
# soon as another process wants the same cores; passive waiting costs little when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path
from typing import Annotated, Optional

import typer

from hyperexport.errors import UserError
from hyperexport_cli.errors import user_errors
from hyperexport_cli.output import (print_adapt, print_bench, print_json, print_metrics, print_parameters,
                                    print_parity)

app = typer.Typer(
    name="hyperexport",
    help="Train HyperFormer++ multi-task T5 models and ship each task as a plain graph.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RecipeArg = Annotated[
    Optional[Path], typer.Argument(help="Recipe YAML; default: the embedded demo recipe.", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@app.command(epilog="Example: hyperexport train  |  hyperexport train recipes/tiny.yaml --max-steps 20 --output runs/try")
@user_errors
def train(
    recipe: RecipeArg = None,
    output: Annotated[Optional[Path], typer.Option(help="Run folder; default runs/<recipe name>.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="Override the recipe's max_steps.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue the unfinished run exactly where it stopped.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run folder.")] = False,
    stop_after: Annotated[
        Optional[int], typer.Option(min=1, help="Stop after this step, leaving a checkpoint for --resume.")
    ] = None,
) -> None:
    """Multi-task training from a recipe; writes runs/<name>/ and points runs/latest at it."""
    from hyperexport.recipe.load import load_recipe
    from hyperexport.training.loop import train as train_recipe

    run_dir = train_recipe(load_recipe(recipe), output=output, max_steps=max_steps, device=device,
                           resume=resume, overwrite=overwrite, stop_after=stop_after)
    state = "stopped early, resume with --resume" if run_dir.name.endswith(".partial") else "finished"
    typer.echo(f"run {state}: {run_dir}")


@app.command(epilog="Example: hyperexport evaluate runs/demo --task rte --json")
@user_errors
def evaluate(
    run: Annotated[Optional[Path], typer.Argument(help="Run folder; default runs/latest.", show_default=False)] = None,
    task: Annotated[Optional[list[str]], typer.Option(help="Evaluate only this task (repeatable).")] = None,
    split: Annotated[str, typer.Option(help="validation or test.")] = "test",
    json_output: JsonOpt = False,
) -> None:
    """Evaluate a trained run on its tasks (generation, the paper's metrics, majority baseline)."""
    from hyperexport.training.evaluate import evaluate_run

    if split not in ("validation", "test"):
        raise UserError(f"unknown split '{split}': use validation or test")
    result = evaluate_run(run, task, split)
    print_json(result) if json_output else print_metrics(result)


@app.command(epilog="Example: hyperexport materialize --task rte  |  hyperexport materialize --run runs/demo --all")
@user_errors
def materialize(
    run: Annotated[Optional[Path], typer.Option(help="Run folder; default runs/latest.")] = None,
    task: Annotated[Optional[list[str]], typer.Option(help="Task to materialize (repeatable).")] = None,
    all_tasks: Annotated[bool, typer.Option("--all", help="Materialize every task of the run.")] = False,
    output: Annotated[Optional[Path], typer.Option(help="Task folder; default <run>/tasks/<task>.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing task folder.")] = False,
) -> None:
    """Evaluate the hypernetwork once per task and keep that task's adapter weights."""
    from hyperexport.materialize import materialize as materialize_tasks

    if not task and not all_tasks:
        raise UserError("name a task with --task, or pass --all to materialize every task of the run")
    for folder in materialize_tasks(run, None if all_tasks else task, output, overwrite):
        typer.echo(f"materialized: {folder}")


@app.command(epilog="Example: hyperexport export --task rte --format onnx --head both  |  "
                     "hyperexport export --task rte --format tensorrt --precision bf16 --batch 1:8:32 --seq 1:64:256")
@user_errors
def export(
    task: Annotated[str, typer.Option(help="A materialized task of the run.")],
    run: Annotated[Optional[Path], typer.Option(help="Run folder; default runs/latest.")] = None,
    format: Annotated[str, typer.Option(help="onnx, or tensorrt (engines, needs an NVIDIA GPU).")] = "onnx",
    head: Annotated[str, typer.Option(help="generate, classify or both.")] = "both",
    precision: Annotated[str, typer.Option(
        help="fp32; fp16 (wo kept fp32) or bf16 for GPUs (bf16 needs a GPU runtime); int8 (onnx only: "
             "dynamic quantization, CPU).")] = "fp32",
    opset: Annotated[int, typer.Option(min=14, help="ONNX opset.")] = 18,
    batch: Annotated[str, typer.Option(help="tensorrt: batch profile min:opt:max.")] = "1:8:32",
    seq: Annotated[str, typer.Option(help="tensorrt: source-length profile min:opt:max.")] = "1:64:256",
    timing_cache: Annotated[Optional[Path], typer.Option(
        help="tensorrt: timing cache file to reuse and update across tasks.")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Export folder; default exports/<task>/<format>/.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing export folder.")] = False,
    generate_graph: Annotated[bool, typer.Option(
        "--generate-graph", help="onnx: also generate_model.onnx, the whole greedy loop in one ONNX Runtime graph.")] = False,
) -> None:
    """Export a materialized task as ONNX graphs with no hypernetwork inside, or as TensorRT engines built from them."""
    if format == "tensorrt":
        from hyperexport.export.tensorrt.build import export_tensorrt

        if generate_graph:
            raise UserError("--generate-graph is an ONNX Runtime graph: export it with --format onnx (TensorRT "
                            "engines run the encoder and decoder graphs)")
        folder = export_tensorrt(run, task=task, head=head, precision=precision, batch=batch, seq=seq, output=output,
                                 overwrite=overwrite, opset=opset, timing_cache=timing_cache)
        typer.echo(f"exported: {folder}")
        return
    from hyperexport.export.onnx import export_onnx

    if format != "onnx":
        raise UserError(f"unknown format '{format}': use onnx or tensorrt")
    typer.echo(f"exported: {export_onnx(run, task=task, head=head, opset=opset, output=output, overwrite=overwrite, precision=precision, generate_graph=generate_graph)}")


@app.command(epilog="Example: hyperexport verify exports/rte/onnx --json")
@user_errors
def verify(
    export_dir: Annotated[Path, typer.Argument(help="An export folder (hyperexport export).", show_default=False)],
    run: Annotated[Optional[Path], typer.Option(help="Run folder; default the one the export came from.")] = None,
    max_examples: Annotated[int, typer.Option(min=1, help="Evaluation examples to run.")] = 200,
    tensorrt_check: Annotated[bool, typer.Option(
        help="Also check the ONNX graphs for TensorRT (always on for tensorrt exports).")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Compare PyTorch (hypernetwork, folded) and the export (ONNX Runtime or TensorRT) on the same inputs; exit 1
    on any mismatch or when a runner the export needs is missing here (bf16 graphs need a GPU)."""
    from hyperexport.verify.parity import verify as verify_export

    report = verify_export(export_dir, run, max_examples, tensorrt_check)
    print_json(report) if json_output else print_parity(report)
    if not report["passed"]:
        raise typer.Exit(code=1)


@app.command(epilog="Example: hyperexport predict exports/rte/onnx "
                     "'{\"sentence1\": \"a cat sings\", \"sentence2\": \"a cat\"}'  |  "
                     "hyperexport predict exports/rte/onnx --input examples.jsonl --json")
@user_errors
def predict(
    export_dir: Annotated[Path, typer.Argument(help="An export folder (hyperexport export).", show_default=False)],
    text: Annotated[Optional[str], typer.Argument(
        help="One example: a JSON object of the task's fields, or the plain text of a one-field task.",
        show_default=False)] = None,
    input_file: Annotated[Optional[Path], typer.Option("--input", help="JSONL file, one JSON object per line.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Label new examples with an export folder (ONNX Runtime on the CPU); warns on truncated inputs."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from hyperexport.runtime.predict import predict as predict_examples

    results = predict_examples(export_dir, text=text, input_file=input_file)
    if json_output:
        print_json(results)
        return
    with_probability = "probabilities" in results[0]
    table = Table("index", "label", *(["probability"] if with_probability else []))
    for row in results:  # Text: a generated label is never read as rich markup
        extra = [f"{row['probabilities'][row['label']]:.3f}"] if with_probability else []
        table.add_row(str(row["index"]), Text(row["label"]), *extra)
    Console().print(table)


@app.command(epilog="Example: hyperexport deploy --task rte --format onnx --triton-repo triton-repo  |  "
                     "hyperexport deploy --task rte --format tensorrt --triton-repo triton-repo --overwrite")
@user_errors
def deploy(
    task: Annotated[str, typer.Option(help="The exported task.")],
    format: Annotated[str, typer.Option(help="tensorrt (plans) or onnx.")] = "tensorrt",
    triton_repo: Annotated[Path, typer.Option(
        help="Deployment folder: models/ is the Triton model repository, clients/<task>/ the client.")] = Path("triton-repo"),
    export_dir: Annotated[Optional[Path], typer.Option("--export", help="Export folder; default exports/<task>/<format>/.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the task's models and client folder.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Write a verified export as Triton models (config.pbtxt from the io spec, checked with Triton's protobuf) and a client folder."""
    from hyperexport.contracts.fields import to_json
    from hyperexport.serve.deploy import deploy as deploy_task

    description = deploy_task(task, format, triton_repo, export_dir, overwrite)
    if json_output:
        print_json(to_json(description))
        return
    typer.echo(f"deployed {task} ({format}, {description.precision}): {', '.join(description.models.values())}")
    typer.echo(f"serve: tritonserver --model-repository {triton_repo / 'models'}")
    typer.echo(f"query: python {triton_repo / 'clients' / task / 'client.py'} '<JSON example>'")


@app.command(epilog="Example: hyperexport params recipes/glue-t5-base-hyperformer++.yaml --json")
@user_errors
def params(recipe: RecipeArg = None, json_output: JsonOpt = False) -> None:
    """Parameter accounting as the paper's Table 1 counts it (offline, no weights needed)."""
    from hyperexport.params import parameter_report
    from hyperexport.recipe.load import load_recipe

    report = parameter_report(load_recipe(recipe))
    print_json(report) if json_output else print_parameters(report)


@app.command(epilog="Example: hyperexport bench --task rte --backbone t5-small --batch 1,8 --head generate --peers --json  |  "
                     "hyperexport bench --task rte --train --backbone t5-small")
@user_errors
def bench(
    task: Annotated[str, typer.Option(help="The task to benchmark.")],
    run: Annotated[Optional[Path], typer.Option(help="Run folder; default runs/latest (with --backbone: "
                                                     "the default recipe).")] = None,
    backbone: Annotated[Optional[str], typer.Option(
        help="Build this backbone preset's shape with random weights (t5-small, t5-base): real model sizes, "
             "no download.")] = None,
    recipe: Annotated[Optional[Path], typer.Option(
        help="With --backbone: the recipe whose tasks and adapter settings to use (default: the run's, "
             "else the embedded demo recipe).")] = None,
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1,8,32",
    seq: Annotated[int, typer.Option(help="Input length in tokens.")] = 128,
    head: Annotated[str, typer.Option(help="classify, generate, or classify,generate.")] = "classify,generate",
    rounds: Annotated[int, typer.Option(help="Timed calls per variant, batch and head.")] = 10,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for PyTorch and ONNX Runtime (default: all).")] = None,
    train: Annotated[bool, typer.Option("--train", help="Instead: training steps/s of HyperFormer++ against "
                                                         "plain adapters on the same batches.")] = False,
    tensorrt: Annotated[Optional[Path], typer.Option(
        help="Also this TensorRT engine folder of the task (export --format tensorrt; NVIDIA GPU).")] = None,
    peers: Annotated[bool, typer.Option("--peers", help="Also PyTorch eager and CTranslate2 int8/fp32 on the same "
                                                         "weights, each at its best setting (pip install -e '.[peers]').")] = False,
    memory: Annotated[bool, typer.Option(help="Measure the generate exports' resident memory (a fresh process each).")] = True,
    json_output: JsonOpt = False,
) -> None:
    """Latency (p50/p90), throughput, sizes and speed-up ratios of the PyTorch hypernetwork model, the
    folded model, ONNX Runtime fp32/int8, the plain backbone and (--peers) PyTorch eager and CTranslate2,
    measured side by side; decode steps against the memory bound; the issue's goals."""
    from hyperexport.bench.inference import bench as run_bench
    from hyperexport.bench.subject import parse_sizes
    from hyperexport.bench.training import bench_training

    batches = parse_sizes(batch, "batch")
    if train:
        report = bench_training(run, task=task, backbone=backbone, recipe=recipe, batch=batches[0], seq=seq,
                                rounds=rounds, threads=threads, progress_bar=not json_output)
    else:
        report = run_bench(run, task, backbone, recipe, batches, seq, tuple(head.split(",")), rounds, threads,
                           progress_bar=not json_output, tensorrt=tensorrt, peers=peers, memory=memory)
    print_json(report) if json_output else print_bench(report)


@app.command("import-hyperformer",
             epilog="Example: hyperexport import-hyperformer outputs/hyperformer++ --output runs/hf-pp --tokenizer t5-base")
@user_errors
def import_hyperformer(
    checkpoint_dir: Annotated[Path, typer.Argument(help="The original code's output_dir (pytorch_model.bin, "
                                                   "config.json, the arguments JSON).", show_default=False)],
    output: Annotated[Optional[Path], typer.Option(help="Run folder; default runs/<checkpoint folder name>.")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="Tokenizer hub id or folder; default the checkpoint's "
                                                     "own files, else none (token-id stages only).")] = None,
    training_args: Annotated[Optional[Path], typer.Option(help="The arguments JSON the original ran with; "
                                                          "default the one in CHECKPOINT_DIR.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run folder.")] = False,
) -> None:
    """Import a checkpoint of the original HyperFormer code (transformers 3.5.1) as a run folder."""
    from hyperexport.interop.hyperformer import import_hyperformer as import_checkpoint

    typer.echo(f"imported: {import_checkpoint(checkpoint_dir, output, tokenizer, training_args, overwrite)}")


@app.command(epilog="Example: hyperexport adapt runs/demo --task scitail --data scitail.jsonl --shots 16 --init-from rte  |  "
                     "hyperexport adapt --task topic --data topic.csv --template 'sentence: {text}' --labels 0,1,2 --json")
@user_errors
def adapt(
    run: Annotated[Optional[Path], typer.Argument(help="Run folder; default runs/latest.", show_default=False)] = None,
    task: Annotated[str, typer.Option(help="The new task's name (a built-in task, or a custom one with --template/--labels).")] = "",
    data: Annotated[Optional[Path], typer.Option(help="Labelled examples, .jsonl or .csv: the shots are drawn from it.")] = None,
    eval_data: Annotated[Optional[Path], typer.Option(
        help="Labelled examples to measure the task on (halved into validation/test); default: the rows of --data not drawn.")] = None,
    template: Annotated[Optional[str], typer.Option(help="Custom task: source template, e.g. 'sentence: {text}'.")] = None,
    labels: Annotated[Optional[str], typer.Option(help="Custom task: label strings, comma-separated, e.g. 0,1.")] = None,
    metric: Annotated[Optional[str], typer.Option(help="Custom task: metric (default accuracy).")] = None,
    label_field: Annotated[Optional[str], typer.Option(help="Custom task: the label's field (default label).")] = None,
    shots: Annotated[Optional[int], typer.Option(min=1, help="K examples in total, stratified by label and seeded; default all.")] = None,
    init_from: Annotated[Optional[str], typer.Option(help="Start from this trained task's embedding, or auto: the one with the lowest loss on the shots; default N(0, 1).")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 200,
    seed: Annotated[int, typer.Option(min=0, help="Seeds the shots, the batches and a random start.")] = 0,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="AdamW learning rate (linear warmup and decay).")] = 3e-2,
    tune: Annotated[str, typer.Option(help="embedding (default), layer-norms or hypernet (these two need --output).")] = "embedding",
    output: Annotated[Optional[Path], typer.Option(help="Write the updated run here; default: update RUN in place.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --output folder.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    json_output: JsonOpt = False,
) -> None:
    """Add a task to a trained run from a few examples: learn only its task embedding (hypernetworks and backbone frozen)."""
    from hyperexport.training.adapt import adapt as adapt_task

    if not task or data is None:
        raise UserError("name the new task with --task and its labelled examples with --data FILE")
    label_list = [label.strip() for label in labels.split(",")] if labels is not None else None
    report = adapt_task(run, task=task, data=data, eval_data=eval_data, template=template, labels=label_list,
                        metric=metric, label_field=label_field, shots=shots, init_from=init_from, steps=steps,
                        seed=seed, learning_rate=learning_rate, tune=tune, output=output, overwrite=overwrite,
                        device=device, progress_bar=not json_output)
    print_json(report) if json_output else print_adapt(report)


def main() -> None:
    app()
