"""Read a finished run folder back: its recipe, tokenizer and trained model (the input of every
later stage: evaluate, materialize, export)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hyperexport.contracts import publish as artifacts
from hyperexport.errors import UserError


@dataclass
class LoadedRun:
    path: Path
    recipe: object
    tokenizer: object
    model: object  # HyperT5, eval mode, trained weights loaded

    def check_tasks(self, tasks: list[str]) -> None:
        """Refuse task names the run was not trained on (one line naming the run's tasks)."""
        known = list(self.model.task_names)
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise UserError(f"task '{unknown[0]}' is not in the run {self.path.name}: its tasks are {', '.join(known)}")

    def task_spec(self, task: str):
        """The TaskSpec of one of the run's tasks (registry or recipe-declared)."""
        from hyperexport.training.task_data import task_spec

        return task_spec(next(t for t in self.recipe.tasks if t.name == task))


def load_run(run: str | Path | None = None) -> LoadedRun:
    """The run at `run` (default runs/latest), ready for inference."""
    from hyperexport.model.build import build_model, check_tokenizer_fits, load_tokenizer
    from hyperexport.recipe.schema import load_recipe
    from hyperexport.training.checkpoint import load_trainable

    path = artifacts.resolve_run(run)
    recipe = load_recipe(path / artifacts.RECIPE_FILE)
    backbone_dir = path / artifacts.BACKBONE_DIR
    model = build_model(recipe, [t.name for t in recipe.tasks], backbone_dir if backbone_dir.is_dir() else None)
    tokenizer = None  # an imported run may have none: the stages that need one say so
    if (path / artifacts.TOKENIZER_DIR).is_dir():
        tokenizer = load_tokenizer(str(path / artifacts.TOKENIZER_DIR))
        check_tokenizer_fits(tokenizer, model.backbone.config)
    load_trainable(model, path / artifacts.WEIGHTS_FILE)
    return LoadedRun(path, recipe, tokenizer, model.eval())


def evaluate_run(run: str | Path | None = None, tasks: list[str] | None = None, split: str = "test",
                 batch_size: int | None = None) -> dict:
    """Metrics of a run's trained model on `split` for some or all of its tasks, with baselines."""
    import torch

    from hyperexport.training.evaluate import evaluate_tasks
    from hyperexport.training.task_data import load_task_data

    loaded = load_run(run)
    loaded.check_tasks(tasks or [])
    data = {name: d for name, d in load_task_data(loaded.recipe).items() if not tasks or name in tasks}
    result = evaluate_tasks(loaded.model, loaded.tokenizer, data, split,
                            batch_size or loaded.recipe.train.eval_batch_size,
                            loaded.recipe.data.max_source_length, torch.device("cpu"), with_baseline=True)
    return {"run": str(loaded.path), "split": split, **result}
