"""`adapt`: add a task to a trained run from a few labelled examples (method §10, few-shot domain
generalization). By default only a new task embedding learns; the hypernetworks and the backbone (its
trained layer norms included) stay frozen, so every trained task keeps its exact adapters and the new
task costs one embedding (t numbers) where a plain per-task adapter costs thousands.

- Start: a trained task's embedding (`init_from`; "auto": the one whose embedding gives the shots the
  lowest loss, method §10's "related task") or N(0, 1) like every task's initialization.
- Shots and evaluation rows: `few_shot` (K stratified by label; the rest halved into validation and test).
- The loop: `adapt_loop`, the training loop's sampler, collate and shared step on a one-task model
  (`adapt_model`), on HF Accelerate (`device` auto, cpu or cuda).
- The run is rewritten through `publish.building` (`adapt_folder`: unchanged files hard-linked, one rename):
  `data/<task>/{train,validation,test}.jsonl` (the rows used), a new row of `task_embeddings.weight` in
  `model.safetensors`, the task in `recipe.yaml` (source jsonl, path data/<task>) and the manifest's
  `tasks`, `parameters` and `adapted_tasks`. Nothing is written when anything fails first.
`tune` widens what learns: "layer-norms" adds T5's layer norms, "hypernet" also the hypernetworks (and
the task projector, if any). Both change every task of the run, so they must write a new run (`output`),
which leaves out the old run's materialized tasks.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hyperexport.contracts import names
from hyperexport.contracts.run import RunFolder, RunManifest
from hyperexport.errors import UserError
from hyperexport.model.hyper_t5 import HyperT5
from hyperexport.options import DEFAULT_ADAPT_LEARNING_RATE, DEFAULT_ADAPT_STEPS
from hyperexport.params import parameter_report
from hyperexport.recipe.load import load_recipe, recipe_from_dict, recipe_to_dict
from hyperexport.recipe.schema import Recipe
from hyperexport.tasks.registry import TASKS, TaskSpec
from hyperexport.training.accelerator import accelerator_for
from hyperexport.training.adapt_folder import AdaptedRun, write_adapted_run
from hyperexport.training.adapt_loop import evaluate_new_task, nearest_task, train_steps
from hyperexport.training.adapt_model import (
    TUNE_CHOICES,
    RunToAdapt,
    adaptation_model,
    initial_embedding,
    parameter_facts,
    run_tensors,
    set_trainable,
)
from hyperexport.training.few_shot import data_facts, read_few_shot
from hyperexport.training.task_data import TaskData, task_spec

DEFAULT_STEPS, DEFAULT_LEARNING_RATE = DEFAULT_ADAPT_STEPS, DEFAULT_ADAPT_LEARNING_RATE
AUTO_INIT = "auto"  # --init-from auto: the trained task whose embedding has the lowest loss on the shots
# adapt learns in fp32 whatever precision the run was trained in: the loop is short, and a run trained in
# fp16 on a GPU can still be adapted on a CPU
PRECISION = "fp32"


def adapt(run: str | Path | None = None, *, task: str, data: str | Path, eval_data: str | Path | None = None,
          template: str | None = None, labels: list[str] | None = None, metric: str | None = None,
          label_field: str | None = None, shots: int | None = None, init_from: str | None = None,
          steps: int = DEFAULT_STEPS, seed: int = 0, learning_rate: float = DEFAULT_LEARNING_RATE,
          tune: str = "embedding", output: str | Path | None = None, overwrite: bool = False,
          device: str = "auto", progress_bar: bool = True) -> dict:
    """Learn `task` from the examples in `data` on the run at `run` (default runs/latest); returns a report."""
    folder = _run_with_tokenizer(run)
    recipe = load_recipe(folder.recipe_file)
    destination = Path(output).resolve() if output is not None else folder.path
    _check_request(recipe, folder, destination, task=task, init_from=init_from, tune=tune, overwrite=overwrite,
                   steps=steps, shots=shots, learning_rate=learning_rate)
    accelerator = accelerator_for(device, PRECISION)  # an unknown or missing device is refused here
    entry = _task_entry(task, template, labels, metric, label_field)
    recipe_dict, new_recipe = _recipe_with_task(recipe, folder.path, destination, entry)
    spec = _task_spec(new_recipe, task)
    data, eval_data = Path(data), None if eval_data is None else Path(eval_data)
    rows = read_few_shot(spec, data, eval_data, shots=shots, seed=seed, data_seed=recipe.data.data_seed)

    base = RunToAdapt.load(folder, recipe, accelerator)
    model, learned = _learn(base, rows.task_data(spec), init_from=init_from, tune=tune, steps=steps,
                            learning_rate=learning_rate, seed=seed, progress_bar=progress_bar)
    report = {"run": str(destination), "task": task, "tune": tune, "init_from": learned["init_from"],
              "init_losses": learned["init_losses"], "seed": seed, "shots": len(rows.train),
              "validation_examples": len(rows.validation), "test_examples": len(rows.test), "steps": steps,
              "learning_rate": learning_rate, "parameters": learned["parameters"], "loss": learned["loss"],
              "test": learned["test"]}
    if base.accelerator.is_main_process:  # under `accelerate launch`, one process writes
        facts = {**data_facts(data, eval_data), **{k: v for k, v in report.items() if k not in ("run", "task")}}
        manifest = _manifest_with_task(folder, new_recipe, task, facts)
        adapted = AdaptedRun(task, rows, run_tensors(model, base.trained), recipe_dict, manifest,
                             drop_materialized=tune != "embedding")
        write_adapted_run(folder, destination, adapted)
    return report


def _learn(run: RunToAdapt, task_data: TaskData, *, init_from: str | None, tune: str, steps: int,
           learning_rate: float, seed: int, progress_bar: bool) -> tuple[HyperT5, dict]:
    """The new task started, trained and measured before and after; returns the model and those facts."""
    init_losses = None
    if init_from == AUTO_INIT:
        init_from, init_losses = nearest_task(run, task_data.train)
    init_row = initial_embedding(run.trained, run.task_names, init_from, seed)
    model = adaptation_model(run, task_data.spec.name, init_row)
    trainable = set_trainable(model, tune)
    before = evaluate_new_task(run, model, task_data)
    losses = train_steps(run, model, task_data.train, steps=steps, learning_rate=learning_rate, seed=seed,
                         progress_bar=progress_bar)
    after = evaluate_new_task(run, model, task_data)
    return model, {
        "init_from": init_from, "init_losses": init_losses,
        "parameters": parameter_facts(run.recipe, init_row, trainable),
        "loss": {"first": losses[0], "last": losses[-1]} if losses else None,
        "test": {"init": before["metrics"], "adapted": after["metrics"], "majority_baseline": after["baseline"]},
    }


# ---- the request --------------------------------------------------------------------------------


def _run_with_tokenizer(run: str | Path | None) -> RunFolder:
    folder = RunFolder.resolve(run)
    if folder.tokenizer_dir is None:  # else the tokenizer's path would be looked up as a hub id
        raise UserError(f"run {folder.name} has no tokenizer (it was imported without one), which adapt needs for "
                        "the examples' text: import the checkpoint again with --tokenizer")
    return folder


def _check_request(recipe: Recipe, folder: RunFolder, destination: Path, *, task: str, init_from: str | None,
                   tune: str, overwrite: bool, steps: int, shots: int | None, learning_rate: float) -> None:
    known = [t.name for t in recipe.tasks]
    if recipe.model.variant == "adapters":
        raise UserError(f"run {folder.name} is an adapters run: it has no task embedding to learn; "
                        "adapt a hyperformer++ or hyperformer run")
    if task in known:
        raise UserError(f"task '{task}' is already in the run {folder.name}: give the new task another name")
    if init_from is not None and init_from not in (*known, AUTO_INIT):
        raise UserError(f"--init-from '{init_from}' is not a task of the run {folder.name}: "
                        f"its tasks are {', '.join(known)} (or {AUTO_INIT}: the one with the lowest loss on the shots)")
    if tune not in TUNE_CHOICES:
        raise UserError(f"unknown --tune '{tune}': use {', '.join(TUNE_CHOICES)}")
    if tune != "embedding" and destination == folder.path:
        raise UserError(f"--tune {tune} changes every task of the run: write the result to a new run with --output DIR")
    if destination != folder.path and destination.exists() and not overwrite:
        raise UserError(f"{destination} already exists: pass --overwrite to replace it, or choose another --output")
    if steps < 1 or (shots is not None and shots < 1) or not learning_rate > 0:
        raise UserError("--steps, --shots and --learning-rate must be positive")


def _task_entry(task: str, template: str | None, labels: list[str] | None, metric: str | None,
                label_field: str | None) -> dict:
    """The new task's recipe entry; a custom task (not in the registry) declares template and labels."""
    entry = {"name": task, "source": "jsonl", "path": f"{names.ADAPTED_DATA_DIR}/{task}"}
    custom = {"template": template, "labels": labels, "metric": metric, "label_field": label_field}
    if task in TASKS:
        given = [f"--{key.replace('_', '-')}" for key, value in custom.items() if value is not None]
        if given:
            raise UserError(f"'{task}' is a built-in task with its own template and labels, so {', '.join(given)} "
                            "cannot be set: give a custom task its own name")
        if TASKS[task].split_policy != "direct":
            raise UserError(f"built-in task '{task}' cuts its splits by the paper's protocol: adapt it under a "
                            "custom name with --template and --labels")
        return entry
    if template is None or not labels:
        raise UserError(f"'{task}' is not a built-in task: declare it with --template (e.g. 'sentence: {{text}}') "
                        "and --labels (e.g. 0,1), and --metric if not accuracy")
    return {**entry, "template": template, "labels": list(labels), "metric": metric or "accuracy",
            "label_field": label_field or "label"}


def _recipe_with_task(recipe: Recipe, run_dir: Path, destination: Path, entry: dict) -> tuple[dict, Recipe]:
    """(the recipe as plain data with the task appended, for recipe.yaml; the validated recipe)."""
    plain = recipe_to_dict(recipe)
    for task in plain["tasks"]:  # tasks adapted earlier keep paths relative to the run folder
        if task["path"] is not None and Path(task["path"]).is_relative_to(run_dir / names.ADAPTED_DATA_DIR):
            task["path"] = Path(task["path"]).relative_to(run_dir).as_posix()
    plain["tasks"].append(entry)
    return plain, recipe_from_dict(plain, base_dir=destination)


def _task_spec(recipe: Recipe, task: str) -> TaskSpec:
    return task_spec(next(t for t in recipe.tasks if t.name == task))


def _manifest_with_task(folder: RunFolder, new_recipe: Recipe, task: str, facts: dict) -> RunManifest:
    """The run's manifest with the task added: the task list, the recounted parameters, its facts."""
    manifest = folder.manifest()
    parameters = {k: v for k, v in parameter_report(new_recipe).items() if k not in ("recipe", "backbone", "variant")}
    return replace(manifest, tasks=tuple(t.name for t in new_recipe.tasks), parameters=parameters,
                   adapted_tasks={**manifest.adapted_tasks, task: facts})
