"""`train`: the multi-task training loop, explicit and on HF Accelerate (one CPU, one GPU, or several
with `accelerate launch`). Read top to bottom: set up, then step / evaluate / checkpoint, then finish
the run folder (best weights evaluated on the test split, metrics.json, manifest) with one rename."""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from hyperexport.contracts import names, publish
from hyperexport.contracts.run import RunManifest, write_run_manifest
from hyperexport.data.collate import collate
from hyperexport.data.sampler import MultiTaskBatchSampler
from hyperexport.errors import Interrupted, UserError
from hyperexport.model.build import build_model, check_tokenizer_fits, load_tokenizer
from hyperexport.model.hyper_t5 import HyperT5
from hyperexport.params import count_parameters
from hyperexport.recipe.load import recipe_to_dict
from hyperexport.recipe.schema import BackboneConfig, Recipe
from hyperexport.training.accelerator import accelerator_for
from hyperexport.training.checkpoint import (
    TrainProgress,
    load_checkpoint,
    load_trainable,
    save_checkpoint,
    save_trainable,
)
from hyperexport.training.evaluate import evaluate_tasks
from hyperexport.training.interrupt import StopRequest, sigint_stops_at_step_boundary
from hyperexport.training.step import batch_loss, optimizer_step
from hyperexport.training.task_data import load_task_data


def train(recipe: Recipe, *, output: Path | None = None, max_steps: int | None = None, device: str = "auto",
          resume: bool = False, overwrite: bool = False, stop_after: int | None = None,
          progress_bar: bool = True) -> Path:
    """Train `recipe`; returns the finished run folder (or the unfinished one when `stop_after` hits)."""
    if max_steps is not None:
        recipe = replace(recipe, train=replace(recipe.train, max_steps=max_steps))
    run_dir = Path(output) if output is not None else Path("runs") / recipe.name
    partial = run_dir.with_name(run_dir.name + names.PARTIAL_SUFFIX)
    _check_destination(recipe, run_dir, partial, resume, overwrite)
    new_parent = publish.first_missing(partial.parent)
    try:
        session = _TrainingSession(recipe, partial, device, resume)
        if not session.run(stop_after, progress_bar):
            return partial
        session.finish(run_dir)
    except BaseException as error:
        kept = (partial / names.CHECKPOINT_DIR).is_dir()
        if not kept:  # nothing to resume: leave nothing behind
            shutil.rmtree(partial, ignore_errors=True)
            publish.remove_if_empty(new_parent)
        if isinstance(error, KeyboardInterrupt):  # a second Ctrl-C, or one before the loop
            kept_note = f"{partial} (its last checkpoint)" if kept else None
            raise Interrupted("training was interrupted", kept_note) from None
        raise
    publish.point_link(run_dir.parent / names.LATEST_LINK, run_dir)
    return run_dir


def _check_destination(recipe: Recipe, run_dir: Path, partial: Path, resume: bool, overwrite: bool) -> None:
    if run_dir.exists() and not overwrite and not resume:  # the run being resumed was started to replace it
        raise UserError(f"{run_dir} already exists: pass --overwrite to replace it, or choose another --output")
    checkpoint = partial / names.CHECKPOINT_DIR
    if resume and not checkpoint.is_dir():
        raise UserError(f"nothing to resume at {checkpoint}: run `hyperexport train` without --resume")
    if resume:
        _check_same_recipe(recipe, partial)
    if not resume and partial.exists():
        shutil.rmtree(partial)  # an abandoned run; starting fresh replaces it


def _check_same_recipe(recipe: Recipe, partial: Path) -> None:
    """--resume continues the run it was started as: refuse a recipe that differs (another backbone,
    model or schedule would silently mix two trainings), naming the first differing field."""
    try:
        started = yaml.safe_load((partial / names.RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise UserError(f"cannot read {partial / names.RECIPE_FILE}: train without --resume") from None
    given = recipe_to_dict(recipe)
    if started != given:
        where, old, new = _first_difference(started, given)
        raise UserError(f"the recipe differs from the one {partial} was started with ({where}: {old!r} -> {new!r}): "
                        "resume with the same recipe and --max-steps, or train without --resume")


def _first_difference(a, b, path: str = "") -> tuple[str, object, object]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{index}]")
    return path or "recipe", a, b


class _TrainingSession:
    """The objects one training run needs, built once; `run` steps, `finish` writes the run folder."""

    def __init__(self, recipe: Recipe, partial: Path, device: str, resume: bool):
        from transformers import get_linear_schedule_with_warmup

        self.recipe, self.partial, config = recipe, partial, recipe.train
        self.accelerator = accelerator_for(device, config.precision)
        self.data = load_task_data(recipe)
        self.tokenizer = load_tokenizer(recipe.backbone.tokenizer)
        backbone_dir = partial / names.BACKBONE_DIR
        self.model = build_model(recipe, list(self.data), backbone_dir if resume and backbone_dir.is_dir() else None)
        check_tokenizer_fits(self.tokenizer, self.model.backbone.config)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, eps=config.adam_epsilon,
                                           weight_decay=config.weight_decay)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, config.warmup_steps, config.max_steps)
        self.sampler = MultiTaskBatchSampler(
            {name: len(d.train) for name, d in self.data.items()}, config.batch_size,
            temperature=recipe.data.temperature, seed=config.seed + self.accelerator.process_index,
            mixed_task_batches=recipe.data.mixed_task_batches,
        )
        if resume:
            self.progress = load_checkpoint(partial / names.CHECKPOINT_DIR, self.model, self.optimizer,
                                            self.scheduler, self.sampler)
        else:
            self.progress = TrainProgress()
            self._start_run_folder()
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(
            self.model, self.optimizer, self.scheduler)

    @property
    def unwrapped(self) -> HyperT5:
        return self.accelerator.unwrap_model(self.model)

    def _start_run_folder(self) -> None:
        if not self.accelerator.is_main_process:
            return
        with publish.write_errors(self.partial):
            self.partial.mkdir(parents=True)
            publish.write_bytes(self.partial / names.RECIPE_FILE, _recipe_yaml(self.recipe).encode())
            self.tokenizer.save_pretrained(self.partial / names.TOKENIZER_DIR)
            if self.recipe.backbone.pretrained is None:  # random weights: keep them, not reproducible elsewhere
                self.model.backbone.save_pretrained(self.partial / names.BACKBONE_DIR)

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self, stop_after: int | None, progress_bar: bool) -> bool:
        """Train up to max_steps; False when stopped early by `stop_after` (resumable). Ctrl-C stops at the
        next step boundary with a checkpoint (`Interrupted`)."""
        with sigint_stops_at_step_boundary() as stop:
            return self._run(stop_after, progress_bar, stop)

    def _run(self, stop_after: int | None, progress_bar: bool, stop: StopRequest) -> bool:
        from tqdm.auto import tqdm

        config = self.recipe.train
        self.model.train()
        bar = tqdm(total=config.max_steps, initial=self.progress.step, desc="train", unit="step",
                   disable=not progress_bar or not self.accelerator.is_main_process, file=sys.stderr)
        while self.progress.step < config.max_steps:
            task, loss = self._step()
            self.progress.step += 1
            bar.update(1)
            if self.progress.step % config.log_every == 0 or self.progress.step == config.max_steps:
                bar.set_postfix(loss=f"{loss:.4f}", task=task, lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
            at_eval = self.progress.step % config.eval_every == 0 or self.progress.step == config.max_steps
            if at_eval:
                summary = _summary(self.progress.step, self._evaluate_and_keep_best())
                if not bar.disable:
                    bar.write(summary, file=sys.stderr)
            stopping = stop_after is not None and self.progress.step >= stop_after
            if at_eval or stopping or stop.requested:
                self._save_checkpoint()
            if stop.requested:
                bar.close()
                raise Interrupted(f"training was interrupted at step {self.progress.step} of {config.max_steps}",
                                  f"{self.partial} with a checkpoint at step {self.progress.step}")
            if stopping and self.progress.step < config.max_steps:
                bar.close()
                return False
        bar.close()
        return True

    def _step(self) -> tuple[str, float]:
        """One sampled batch through the shared step; returns its (first) task and loss."""
        config, draws = self.recipe.train, self.sampler.next_batch()
        examples = [self.data[task].train[index] for task, index in draws]
        batch = collate(self.tokenizer, examples, {n: i for i, n in enumerate(self.data)},
                        self.recipe.data.max_source_length, self.recipe.data.max_target_length)
        loss = batch_loss(self.accelerator, self.model, batch, config)
        optimizer_step(self.accelerator, self.model, loss, self.optimizer, self.scheduler, config.max_grad_norm)
        return draws[0][0], loss.item()

    def _evaluate(self, split: str, with_baseline: bool = False) -> dict:
        config = self.recipe.train
        return evaluate_tasks(self.unwrapped, self.tokenizer, self.data, split, config.eval_batch_size,
                              self.recipe.data.max_source_length, self.accelerator.device, with_baseline)

    def _evaluate_and_keep_best(self) -> dict:
        result = self._evaluate("validation")
        self.progress.history.append({"step": self.progress.step, "average": result["average"],
                                      "tasks": {t: r["metrics"] for t, r in result["tasks"].items()}})
        if result["average"] > self.progress.best_average or self.progress.best_step is None:
            self.progress.best_average, self.progress.best_step = result["average"], self.progress.step
            if self.accelerator.is_main_process:
                with publish.write_errors(self.partial):
                    save_trainable(self.unwrapped, self.partial / names.WEIGHTS_FILE)
        return result

    def _save_checkpoint(self) -> None:
        if self.accelerator.is_main_process:
            with publish.write_errors(self.partial):
                save_checkpoint(self.partial / names.CHECKPOINT_DIR, self.unwrapped, self.optimizer,
                                self.scheduler, self.sampler, self.progress)

    # ---- the finished run -----------------------------------------------------------------------
    def finish(self, run_dir: Path) -> None:
        """Best weights on the test split, metrics.json and manifest, then partial -> run_dir."""
        load_trainable(self.unwrapped, self.partial / names.WEIGHTS_FILE)
        result = self._evaluate("test", with_baseline=True)
        if not self.accelerator.is_main_process:
            return
        metrics = {**result, "split": "test", "best_step": self.progress.best_step,
                   "validation_history": self.progress.history}
        with publish.write_errors(run_dir):  # until the rename, a failure leaves the run resumable
            publish.write_json(self.partial / names.METRICS_FILE, metrics)
            _remove_temporaries(self.partial)
            write_run_manifest(self.partial, _run_manifest(self.recipe, self.unwrapped))
            publish.replace_folder(self.partial, run_dir)
        shutil.rmtree(run_dir / names.CHECKPOINT_DIR, ignore_errors=True)  # not in the manifest


def _remove_temporaries(folder: Path) -> None:
    """Hidden `.<name>.*` files and folders a killed earlier session left in the unfinished run."""
    for path in folder.glob(".*"):
        publish.remove_path(path)


def _summary(step: int, result: dict) -> str:
    scores = ", ".join(f"{task} {name} {value:.1f}" for task, r in result["tasks"].items()
                       for name, value in r["metrics"].items())
    return f"step {step}: validation average {result['average']:.2f} ({scores})"


def _recipe_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)


def _run_manifest(recipe: Recipe, model: HyperT5) -> RunManifest:
    synthetic = any(task.source == "demo" for task in recipe.tasks)
    return RunManifest(
        recipe=recipe.name,
        backbone=BackboneConfig(config=recipe.backbone.config, pretrained=recipe.backbone.pretrained,
                                tokenizer=recipe.backbone.tokenizer),
        variant=recipe.model.variant,
        tasks=tuple(model.task_names),
        parameters=count_parameters(model),
        synthetic_data=synthetic,
        data_note="demo tasks use synthetic text generated offline, not GLUE" if synthetic else None,
    )
