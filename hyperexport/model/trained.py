"""A finished run folder read back: its recipe, tokenizer and trained model (the input of every later
stage: evaluate, materialize, export, verify, bench)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hyperexport.contracts.run import RunFolder
from hyperexport.recipe.load import load_recipe

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hyperexport.model.hyper_t5 import HyperT5
    from hyperexport.recipe.schema import Recipe
    from hyperexport.tasks.registry import TaskSpec


@dataclass(frozen=True)
class TrainedRun:
    folder: RunFolder
    recipe: Recipe
    tokenizer: PreTrainedTokenizerBase | None  # an imported run may have none: the stages that need one say so
    model: HyperT5  # eval mode, trained weights loaded

    @property
    def path(self) -> Path:
        return self.folder.path

    def check_tasks(self, tasks: list[str]) -> None:
        """Refuse task names the run was not trained on (one line naming the run's tasks)."""
        self.folder.require_tasks(tasks)

    def task_spec(self, task: str) -> TaskSpec:
        """The TaskSpec of one of the run's tasks (registry or recipe-declared)."""
        from hyperexport.training.task_data import task_spec

        return task_spec(next(t for t in self.recipe.tasks if t.name == task))


def load_run(run: str | Path | None = None) -> TrainedRun:
    """The run at `run` (default runs/latest), ready for inference."""
    from hyperexport.model.build import build_model, check_tokenizer_fits, load_tokenizer
    from hyperexport.training.checkpoint import load_trainable

    folder = RunFolder.resolve(run)
    recipe = load_recipe(folder.recipe_file)
    model = build_model(recipe, [t.name for t in recipe.tasks], folder.backbone_dir)
    tokenizer = None
    if folder.tokenizer_dir is not None:
        tokenizer = load_tokenizer(str(folder.tokenizer_dir))
        check_tokenizer_fits(tokenizer, model.backbone.config)
    load_trainable(model, folder.weights_file)
    return TrainedRun(folder, recipe, tokenizer, model.eval())
