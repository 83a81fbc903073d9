"""`adapt`: add a task to a trained run from a few labelled examples (method §10, few-shot domain
generalization). By default only a new task embedding learns; the hypernetworks and the backbone (its
trained layer norms included) stay frozen, so every trained task keeps its exact adapters and the new
task costs one embedding (t numbers) where a plain per-task adapter costs thousands.

- Start: a trained task's embedding (`init_from`; "auto": the one whose embedding gives the shots the
  lowest loss, method §10's "related task") or N(0, 1) like every task's initialization.
- Shots: K examples in total, stratified by label (round-robin over the task's labels in order, each
  label's rows in a permutation seeded with `seed`): K = 4 on a binary task is 2 + 2. No K: every row.
- Evaluation rows (`eval_data`, else the rows of `data` not drawn as shots) are halved with the run's
  data seed into the task's validation and test splits, so `evaluate` and `verify` measure the task.
- The loop is the training loop's pieces (sampler, collate, loss) on a one-task model: batches drawn
  with replacement from the shots, AdamW without weight decay, linear warmup (10%) and decay.
- The run is rewritten through a temporary sibling (unchanged files hard-linked) and one rename:
  `data/<task>/{train,validation,test}.jsonl` (the rows used), a new row of `task_embeddings.weight` in
  `model.safetensors`, the task in `recipe.yaml` (source jsonl, path data/<task>) and the manifest's
  `tasks`, `parameters` and `adapted_tasks`. Nothing is written when anything fails first.
`tune` widens what learns: "layer-norms" adds T5's layer norms, "hypernet" also the hypernetworks (and
the task projector, if any). Both change every task of the run, so they must write a new run (`output`),
which leaves out the old run's materialized tasks.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from hyperexport.contracts import manifest as sealing
from hyperexport.contracts import names
from hyperexport.contracts import publish
from hyperexport.contracts.run import RunFolder, read_run_manifest, write_run_manifest
from hyperexport.errors import UserError

TUNE_CHOICES = ("embedding", "layer-norms", "hypernet")
EMBEDDING_KEY = "task_embeddings.weight"
DEFAULT_STEPS = 200
DEFAULT_LEARNING_RATE = 3e-2  # one 64-number vector drawn N(0, 1): it needs larger steps than the hypernet
MIN_EVAL_ROWS = 2  # one validation and one test example at least
AUTO_INIT = "auto"  # --init-from auto: the trained task whose embedding has the lowest loss on the shots


@dataclass(frozen=True)
class FewShotData:
    """The rows of a new task: the K shots and the two evaluation halves."""

    train: list[dict]
    validation: list[dict]
    test: list[dict]

    def task_data(self, spec):
        from hyperexport.data.collate import make_examples
        from hyperexport.training.task_data import TaskData

        return TaskData(spec, *(make_examples(spec, rows) for rows in (self.train, self.validation, self.test)))


def adapt(run: str | Path | None = None, task: str = "", data: str | Path = "", *,
          eval_data: str | Path | None = None, template: str | None = None, labels: list[str] | None = None,
          metric: str | None = None, label_field: str | None = None, shots: int | None = None,
          init_from: str | None = None, steps: int = DEFAULT_STEPS, seed: int = 0,
          learning_rate: float = DEFAULT_LEARNING_RATE, tune: str = "embedding", output: Path | None = None,
          overwrite: bool = False, progress_bar: bool = True) -> dict:
    """Learn `task` from the examples in `data` on the run at `run` (default runs/latest); returns a report."""
    from hyperexport.model.build import load_tokenizer
    from hyperexport.recipe.load import load_recipe

    run_folder = RunFolder.resolve(run)
    run_dir = run_folder.path
    if run_folder.tokenizer_dir is None:  # else the tokenizer's path would be looked up as a hub id
        raise UserError(f"run {run_dir.name} has no tokenizer (it was imported without one), which adapt needs for "
                        "the examples' text: import the checkpoint again with --tokenizer")
    recipe = load_recipe(run_dir / names.RECIPE_FILE)
    destination = Path(output).resolve() if output is not None else run_dir
    _check_request(recipe, run_dir, task, init_from, tune, destination, overwrite, steps, shots, learning_rate)
    recipe_dict, new_recipe = _recipe_with_task(recipe, run_dir, destination,
                                                _task_entry(task, template, labels, metric, label_field))
    spec = _task_spec(new_recipe, task)
    rows = read_labelled_file(spec, Path(data), "--data")
    extra = read_labelled_file(spec, Path(eval_data), "--eval-data") if eval_data is not None else None
    few = split_few_shot(spec, rows, extra, shots, seed, recipe.data.data_seed)

    tokenizer = load_tokenizer(str(run_dir / names.TOKENIZER_DIR))
    trained = _read_trained(run_dir / names.WEIGHTS_FILE)
    task_names = [t.name for t in recipe.tasks]
    task_data = few.task_data(spec)
    init_losses = None
    if init_from == AUTO_INIT:
        init_from, init_losses = nearest_task(run_dir, recipe, trained, task_names, task_data.train, tokenizer)
    init_row = initial_embedding(trained, task_names, init_from, seed)
    model = adaptation_model(run_dir, recipe, trained, task, init_row)
    trainable = set_trainable(model, tune)
    before = evaluate_new_task(model, tokenizer, task_data, recipe)
    losses = train_steps(model, tokenizer, task_data.train, recipe, steps, learning_rate, seed, progress_bar)
    after = evaluate_new_task(model, tokenizer, task_data, recipe)

    tensors = _run_tensors(model, trained)
    report = {
        "run": str(destination), "task": task, "tune": tune, "init_from": init_from, "init_losses": init_losses,
        "seed": seed,
        "shots": len(few.train), "validation_examples": len(few.validation), "test_examples": len(few.test),
        "steps": steps, "learning_rate": learning_rate,
        "parameters": _parameter_facts(recipe, init_row, trainable),
        "loss": {"first": losses[0], "last": losses[-1]} if losses else None,
        "test": {"init": before["metrics"], "adapted": after["metrics"], "majority_baseline": after["baseline"]},
    }
    facts = {**_data_facts(data, eval_data), **{k: v for k, v in report.items() if k not in ("run", "task")}}
    _write_run(run_dir, destination, recipe_dict, new_recipe, tensors, few, task, facts, tune != "embedding")
    return report


# ---- the request --------------------------------------------------------------------------------


def _check_request(recipe, run_dir: Path, task: str, init_from: str | None, tune: str, destination: Path,
                   overwrite: bool, steps: int, shots: int | None, learning_rate: float) -> None:
    names = [t.name for t in recipe.tasks]
    if recipe.model.variant == "adapters":
        raise UserError(f"run {run_dir.name} is an adapters run: it has no task embedding to learn; "
                        "adapt a hyperformer++ or hyperformer run")
    if task in names:
        raise UserError(f"task '{task}' is already in the run {run_dir.name}: give the new task another name")
    if init_from is not None and init_from not in (*names, AUTO_INIT):
        raise UserError(f"--init-from '{init_from}' is not a task of the run {run_dir.name}: "
                        f"its tasks are {', '.join(names)} (or {AUTO_INIT}: the one with the lowest loss on the shots)")
    if tune not in TUNE_CHOICES:
        raise UserError(f"unknown --tune '{tune}': use {', '.join(TUNE_CHOICES)}")
    if tune != "embedding" and destination == run_dir:
        raise UserError(f"--tune {tune} changes every task of the run: write the result to a new run with --output DIR")
    if destination != run_dir and destination.exists() and not overwrite:
        raise UserError(f"{destination} already exists: pass --overwrite to replace it, or choose another --output")
    if steps < 1 or (shots is not None and shots < 1) or not learning_rate > 0:
        raise UserError("--steps, --shots and --learning-rate must be positive")


def _task_entry(task: str, template, labels, metric, label_field) -> dict:
    """The new task's recipe entry; a custom task (not in the registry) declares template and labels."""
    from hyperexport.tasks.registry import TASKS

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


def _recipe_with_task(recipe, run_dir: Path, destination: Path, entry: dict):
    """(the recipe as plain data with the task appended, for recipe.yaml; the validated recipe)."""
    from hyperexport.recipe.load import recipe_from_dict, recipe_to_dict

    plain = recipe_to_dict(recipe)
    for task in plain["tasks"]:  # tasks adapted earlier keep paths relative to the run folder
        if task["path"] is not None and Path(task["path"]).is_relative_to(run_dir / names.ADAPTED_DATA_DIR):
            task["path"] = Path(task["path"]).relative_to(run_dir).as_posix()
    plain["tasks"].append(entry)
    return plain, recipe_from_dict(plain, base_dir=destination)


def _task_spec(recipe, task: str):
    from hyperexport.training.task_data import task_spec

    return task_spec(next(t for t in recipe.tasks if t.name == task))


# ---- data -----------------------------------------------------------------------------------------


def read_labelled_file(spec, file: Path, what: str) -> list[dict]:
    """Every row of a JSONL or CSV file, checked: the task's fields present and a known label."""
    from hyperexport.data.sources import task_file_rows

    if not file.is_file():
        raise UserError(f"{what} file {file} does not exist: give a .jsonl or .csv file of labelled examples")
    source = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}.get(file.suffix.lower())
    if source is None:
        raise UserError(f"{what} file {file} is neither .jsonl (one JSON object per line) nor .csv: rename or convert it")
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
    from hyperexport.data.splits import seeded_permutation

    order = seeded_permutation(len(targets), seed)
    queues = {label: [i for i in order if targets[i] == label]
              for label in [*labels, *sorted(set(targets) - set(labels))]}
    chosen: list[int] = []
    while len(chosen) < shots:
        for queue in queues.values():
            if queue and len(chosen) < shots:
                chosen.append(queue.pop(0))
    return chosen


def split_few_shot(spec, rows: list[dict], eval_rows: list[dict] | None, shots: int | None, seed: int,
                   data_seed: int) -> FewShotData:
    """The shots, and the evaluation rows halved into validation and test (permutation seeded by `data_seed`)."""
    from hyperexport.data.splits import seeded_permutation

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


def _data_facts(data, eval_data) -> dict:
    files = {"data": data, "eval_data": eval_data}
    return {key: None if path is None else {"path": str(Path(path).resolve()),
                                            "sha256": sealing.sha256_file(Path(path))}
            for key, path in files.items()}


# ---- the model ------------------------------------------------------------------------------------


def initial_embedding(trained: dict[str, torch.Tensor], task_names: list[str], init_from: str | None,
                      seed: int) -> torch.Tensor:
    """The new task's starting embedding [t']: a trained task's row, or N(0, 1) like a trained task's init."""
    table = trained[EMBEDDING_KEY]  # [T, t']
    if init_from is not None:
        return table[task_names.index(init_from)].clone()
    return torch.randn(table.shape[1], generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def nearest_task(run_dir: Path, recipe, trained: dict[str, torch.Tensor], task_names: list[str], examples: list,
                 tokenizer) -> tuple[str, dict[str, float]]:
    """The trained task whose embedding, used as is, gives the shots the lowest loss (the recipe's loss,
    teacher-forced, dropout off), and every trained task's loss."""
    from hyperexport.data.collate import collate
    from hyperexport.training.loss import label_smoothed_nll_loss

    task, config = examples[0].task, recipe.train
    model = adaptation_model(run_dir, recipe, trained, task, trained[EMBEDDING_KEY][0])
    losses = {}
    for row, name in enumerate(task_names):
        model.task_embeddings.weight.copy_(trained[EMBEDDING_KEY][row][None])
        total = 0.0
        for start in range(0, len(examples), config.eval_batch_size):
            chunk = examples[start:start + config.eval_batch_size]
            batch = collate(tokenizer, chunk, {task: 0}, recipe.data.max_source_length, recipe.data.max_target_length)
            logits = model(task_ids=batch["task_ids"], input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"],
                           decoder_input_ids=model.backbone._shift_right(batch["labels"])).logits
            total += len(chunk) * label_smoothed_nll_loss(logits, batch["labels"], config.label_smoothing,
                                                          config.loss_reduction).item()
        losses[name] = total / len(examples)
    return min(losses, key=losses.get), losses


def adaptation_model(run_dir: Path, recipe, trained: dict[str, torch.Tensor], task: str, embedding: torch.Tensor):
    """A one-task HyperT5 on the run's backbone: the run's hypernetworks and layer norms, `embedding` as
    the task's row. Its generators do not depend on the number of tasks, so the run's tensors fit."""
    from hyperexport.model.build import build_model

    backbone_dir = run_dir / names.BACKBONE_DIR
    model = build_model(recipe, [task], backbone_dir if backbone_dir.is_dir() else None)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in params.items():
            if param.requires_grad and name != EMBEDDING_KEY:
                param.copy_(trained[name])
        params[EMBEDDING_KEY].copy_(embedding[None])
    return model.eval()


def set_trainable(model, tune: str) -> int:
    """Freeze everything but the task embedding (and, with `tune`, the layer norms / hypernetworks)."""
    from hyperexport.model.hyper_t5 import is_t5_layer_norm

    model.requires_grad_(False)
    model.task_embeddings.weight.requires_grad_(True)
    if tune in ("layer-norms", "hypernet"):
        for module in model.backbone.modules():
            if is_t5_layer_norm(module):
                module.weight.requires_grad_(True)
    if tune == "hypernet":
        model.generators.requires_grad_(True)
        model.task_embeddings.requires_grad_(True)  # the projector, if the run has one
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_steps(model, tokenizer, examples: list, recipe, steps: int, learning_rate: float, seed: int,
                progress_bar: bool = True) -> list[float]:
    """`steps` AdamW steps on the model's trainable parameters with the training loop's sampler, collate
    and loss; batches of the recipe's batch size (at most the number of shots), drawn with replacement."""
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from hyperexport.data.collate import collate
    from hyperexport.data.sampler import MultiTaskBatchSampler
    from hyperexport.training.loss import label_smoothed_nll_loss

    config, task = recipe.train, examples[0].task
    torch.manual_seed(seed)  # dropout
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, eps=config.adam_epsilon, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, steps // 10, steps)
    sampler = MultiTaskBatchSampler({task: len(examples)}, min(config.batch_size, len(examples)), seed=seed)
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc=f"adapt {task}", unit="step", disable=not progress_bar, file=sys.stderr):
        batch = collate(tokenizer, [examples[index] for _, index in sampler.next_batch()], {task: model.task_id(task)},
                        recipe.data.max_source_length, recipe.data.max_target_length)
        logits = model(task_ids=batch["task_ids"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=model.backbone._shift_right(batch["labels"])).logits  # [B, T, V]
        loss = label_smoothed_nll_loss(logits, batch["labels"], config.label_smoothing, config.loss_reduction)
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def evaluate_new_task(model, tokenizer, task_data, recipe, split: str = "test") -> dict:
    """The task's metrics on `split` (greedy generation, as `evaluate`) and the majority baseline."""
    from hyperexport.training.evaluate import evaluate_tasks

    result = evaluate_tasks(model, tokenizer, {task_data.spec.name: task_data}, split, recipe.train.eval_batch_size,
                            recipe.data.max_source_length, torch.device("cpu"), with_baseline=True)
    return result["tasks"][task_data.spec.name]


def _read_trained(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise UserError(f"cannot read {path}: {error}; the file is corrupted or truncated") from None
    if EMBEDDING_KEY not in tensors:
        raise UserError(f"{path} has no {EMBEDDING_KEY}: it is not a hyperformer run's weights file")
    return tensors


def _run_tensors(model, trained: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The run's trained tensors, each as the adapted model holds it now (unchanged unless `tune` let it
    learn), with the new task's row appended to the task embeddings."""
    params = dict(model.named_parameters())
    state = {name: params[name].detach().clone().contiguous() for name in trained if name != EMBEDDING_KEY}
    state[EMBEDDING_KEY] = torch.cat([trained[EMBEDDING_KEY], params[EMBEDDING_KEY].detach()])  # [T + 1, t']
    return state


def _parameter_facts(recipe, embedding: torch.Tensor, trainable: int) -> dict:
    from hyperexport.params import per_task_adapter_parameters

    return {"added": embedding.numel(), "trained": trainable,
            "per_task_adapter": per_task_adapter_parameters(recipe)}


# ---- the run folder -------------------------------------------------------------------------------


def _write_run(run_dir: Path, destination: Path, recipe_dict: dict, new_recipe, tensors: dict, few: FewShotData,
               task: str, facts: dict, drop_materialized: bool) -> None:
    import yaml
    from safetensors.torch import save_file

    from hyperexport.params import parameter_report

    tmp = publish.temporary_sibling(destination)
    try:
        shutil.copytree(run_dir, tmp, copy_function=_link_or_copy, dirs_exist_ok=True)
        if drop_materialized:
            shutil.rmtree(tmp / names.TASKS_DIR, ignore_errors=True)
        data_dir = tmp / names.ADAPTED_DATA_DIR / task
        data_dir.mkdir(parents=True)
        for split in ("train", "validation", "test"):
            lines = [json.dumps(row, ensure_ascii=False) for row in getattr(few, split)]
            (data_dir / f"{split}.jsonl").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        _replace_file(tmp / names.WEIGHTS_FILE, lambda p: save_file(tensors, str(p)))
        _replace_file(tmp / names.RECIPE_FILE, lambda p: p.write_text(yaml.safe_dump(recipe_dict, sort_keys=False)))
        manifest = read_run_manifest(run_dir)
        parameters = {k: v for k, v in parameter_report(new_recipe).items() if k not in ("recipe", "backbone", "variant")}
        # the run's own files are sealed; materialized tasks under tasks/ carry their own manifests
        write_run_manifest(tmp, replace(manifest, tasks=tuple(t.name for t in new_recipe.tasks), parameters=parameters,
                                        adapted_tasks={**manifest.adapted_tasks, task: facts}))
        publish.replace_folder(tmp, destination)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _link_or_copy(source: str, target: str) -> None:
    """Hard-link an unchanged file (no bytes copied); copy where links are not possible."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _replace_file(path: Path, write) -> None:
    """Write `path` anew: the old name is unlinked first, so a hard-linked original is never touched."""
    path.unlink(missing_ok=True)
    write(path)
