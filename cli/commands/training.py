"""Commands that make or grow a run: train, evaluate, params, adapt, import-hyperformer."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from hyperexport.contracts.run import RunFolder
from hyperexport.errors import Interrupted
from hyperexport.options import (
    DEFAULT_ADAPT_LEARNING_RATE,
    DEFAULT_ADAPT_STEPS,
    DEFAULT_DEVICE,
    DEFAULT_SPLIT,
    DEFAULT_TUNE,
    Device,
    Split,
    Tune,
)
from hyperexport_cli.app import JsonOpt, OverwriteOpt, RecipeArg, RunArg, app
from hyperexport_cli.errors import report_interrupt, user_errors
from hyperexport_cli.output import print_adapt, print_json, print_metrics, print_parameters

DeviceOpt = Annotated[Device, typer.Option(help="Where to run: a CUDA GPU when there is one (auto), or cpu.")]


@app.command(epilog="Example: hyperexport train  |  "
                     "hyperexport train recipes/tiny.yaml --max-steps 20 --output runs/try")
@user_errors
def train(
    recipe: RecipeArg = None,
    output: Annotated[Path | None, typer.Option(help="Run folder; default runs/<recipe name>.")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Override the recipe's max_steps.")] = None,
    device: DeviceOpt = DEFAULT_DEVICE,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the unfinished run exactly where it stopped.")] = False,
    overwrite: OverwriteOpt = False,
    stop_after: Annotated[
        int | None, typer.Option(min=1, help="Stop after this step, leaving a checkpoint for --resume.")
    ] = None,
) -> None:
    """Multi-task training from a recipe; writes runs/<name>/ and points runs/latest at it."""
    from hyperexport.recipe.load import load_recipe

    loaded_recipe = load_recipe(recipe)  # a bad recipe is refused before torch loads
    from hyperexport.training.loop import train as train_recipe

    resume_command = " ".join(["hyperexport train", *([shlex.quote(str(recipe))] if recipe else []),
                               *([f"--output {shlex.quote(str(output))}"] if output else []),
                               *([f"--max-steps {max_steps}"] if max_steps else []),
                               *([f"--device {device}"] if device != DEFAULT_DEVICE else []), "--resume"])
    try:
        run_dir = train_recipe(loaded_recipe, output=output, max_steps=max_steps, device=device,
                               resume=resume, overwrite=overwrite, stop_after=stop_after)
    except Interrupted as stopped:
        report_interrupt(stopped, continue_with=resume_command)
    if run_dir.name.endswith(".partial"):
        typer.echo(f"run stopped early, continue with: {resume_command}: {run_dir}")
        return
    typer.echo(f"run finished: {run_dir}")
    print_metrics(RunFolder(run_dir).metrics())


@app.command(epilog="Example: hyperexport evaluate runs/demo --task rte --json")
@user_errors
def evaluate(
    run: RunArg = None,
    task: Annotated[list[str] | None, typer.Option(help="Evaluate only this task (repeatable).")] = None,
    split: Annotated[Split, typer.Option(help="Which split to measure.")] = DEFAULT_SPLIT,
    json_output: JsonOpt = False,
) -> None:
    """Evaluate a trained run on its tasks (generation, the paper's metrics, majority baseline)."""
    RunFolder.resolve(run)  # no run: one line before numpy and torch load
    from hyperexport.training.evaluate import evaluate_run

    result = evaluate_run(run, tasks=task, split=split)
    print_json(result) if json_output else print_metrics(result)


@app.command(epilog="Example: hyperexport params recipes/glue-t5-base-hyperformer++.yaml --json")
@user_errors
def params(recipe: RecipeArg = None, json_output: JsonOpt = False) -> None:
    """Parameter accounting as the paper's Table 1 counts it (offline, no weights needed)."""
    from hyperexport.params import parameter_report
    from hyperexport.recipe.load import load_recipe

    report = parameter_report(load_recipe(recipe))
    print_json(report) if json_output else print_parameters(report)


@app.command("import-hyperformer",
             epilog="Example: hyperexport import-hyperformer outputs/hyperformer++ --output runs/hf-pp "
                    "--tokenizer t5-base")
@user_errors
def import_hyperformer(
    checkpoint_dir: Annotated[Path, typer.Argument(help="The original code's output_dir (pytorch_model.bin, "
                                                   "config.json, the arguments JSON).", show_default=False)],
    output: Annotated[Path | None, typer.Option(help="Run folder; default runs/<checkpoint folder name>.")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer hub id or folder; default the checkpoint's "
                                                  "own files, else none (token-id stages only).")] = None,
    training_args: Annotated[Path | None, typer.Option(help="The arguments JSON the original ran with; "
                                                       "default the one in CHECKPOINT_DIR.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Import a checkpoint of the original HyperFormer code (transformers 3.5.1) as a run folder."""
    from hyperexport.interop.hyperformer import import_hyperformer as import_checkpoint

    folder = import_checkpoint(checkpoint_dir, output=output, tokenizer=tokenizer, training_args=training_args,
                               overwrite=overwrite)
    typer.echo(f"imported: {folder}")


@app.command(epilog="Example: hyperexport adapt runs/demo --task scitail --data scitail.jsonl --shots 16 "
                     "--init-from rte  |  hyperexport adapt --task topic --data topic.csv "
                     "--template 'sentence: {text}' --labels 0,1,2 --json")
@user_errors
def adapt(
    task: Annotated[str, typer.Option(
        help="The new task's name (a built-in task, or a custom one with --template/--labels).")],
    data: Annotated[Path, typer.Option(help="Labelled examples, .jsonl or .csv: the shots are drawn from it.")],
    run: RunArg = None,
    eval_data: Annotated[Path | None, typer.Option(
        help="Labelled examples to measure the task on (halved into validation/test); default: the rows of "
             "--data not drawn.")] = None,
    template: Annotated[str | None, typer.Option(help="Custom task: source template, e.g. 'sentence: {text}'.")] = None,
    labels: Annotated[str | None, typer.Option(help="Custom task: label strings, comma-separated, e.g. 0,1.")] = None,
    metric: Annotated[str | None, typer.Option(help="Custom task: metric (default accuracy).")] = None,
    label_field: Annotated[str | None, typer.Option(help="Custom task: the label's field (default label).")] = None,
    shots: Annotated[int | None, typer.Option(
        min=1, help="K examples in total, stratified by label and seeded; default all.")] = None,
    init_from: Annotated[str | None, typer.Option(
        help="Start from this trained task's embedding, or auto: the one with the lowest loss on the shots; "
             "default N(0, 1).")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = DEFAULT_ADAPT_STEPS,
    seed: Annotated[int, typer.Option(min=0, help="Seeds the shots, the batches and a random start.")] = 0,
    learning_rate: Annotated[float, typer.Option(
        min=0.0, help="AdamW learning rate (linear warmup and decay).")] = DEFAULT_ADAPT_LEARNING_RATE,
    tune: Annotated[Tune, typer.Option(
        help="What learns; layer-norms and hypernet change every task (need --output).")] = DEFAULT_TUNE,
    output: Annotated[Path | None, typer.Option(
        help="Write the updated run here; default: update RUN in place.")] = None,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = DEFAULT_DEVICE,
    json_output: JsonOpt = False,
) -> None:
    """Add a task to a trained run from a few examples: learn only its task embedding (hypernetworks and
    backbone frozen)."""
    from hyperexport.training.adapt import adapt as adapt_task

    label_list = [label.strip() for label in labels.split(",")] if labels is not None else None
    report = adapt_task(run, task=task, data=data, eval_data=eval_data, template=template, labels=label_list,
                        metric=metric, label_field=label_field, shots=shots, init_from=init_from, steps=steps,
                        seed=seed, learning_rate=learning_rate, tune=tune, output=output, overwrite=overwrite,
                        device=device, progress_bar=not json_output)
    print_json(report) if json_output else print_adapt(report)
