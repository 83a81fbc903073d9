"""The model `adapt` trains: a one-task HyperT5 on a run's backbone, holding the run's hypernetworks and
layer norms and the new task's embedding; which of its parameters learn (`tune`); and the run's tensors
written back with the new task's row appended. The generators do not depend on the number of tasks, so
the run's tensors fit a one-task model as they are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from hyperexport.contracts.run import RunFolder
from hyperexport.errors import UserError
from hyperexport.model.build import build_model, load_tokenizer
from hyperexport.model.hyper_t5 import HyperT5, is_t5_layer_norm
from hyperexport.options import TUNES
from hyperexport.params import per_task_adapter_parameters
from hyperexport.recipe.schema import Recipe

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase

TUNE_CHOICES = TUNES
EMBEDDING_KEY = "task_embeddings.weight"


@dataclass(frozen=True)
class RunToAdapt:
    """What every part of `adapt` reads: the trained run, its recipe, tokenizer and trained tensors, and the
    Accelerator the new task learns on."""

    folder: RunFolder
    recipe: Recipe
    tokenizer: PreTrainedTokenizerBase
    trained: dict[str, torch.Tensor]  # model.safetensors: hypernetworks, task embeddings [T, t'], layer norms
    accelerator: Accelerator

    @classmethod
    def load(cls, folder: RunFolder, recipe: Recipe, accelerator: Accelerator) -> RunToAdapt:
        """`folder` (a run with a tokenizer) read for adapting on `accelerator`."""
        return cls(folder, recipe, load_tokenizer(str(folder.tokenizer_dir)), read_trained(folder.weights_file),
                   accelerator)

    @property
    def task_names(self) -> list[str]:
        return [task.name for task in self.recipe.tasks]


def read_trained(path: Path) -> dict[str, torch.Tensor]:
    """A run's trained tensors; a damaged file or one without task embeddings is a one-line error."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise UserError(f"cannot read {path}: {error}; the file is corrupted or truncated") from None
    if EMBEDDING_KEY not in tensors:
        raise UserError(f"{path} has no {EMBEDDING_KEY}: it is not a hyperformer run's weights file")
    return tensors


def initial_embedding(trained: dict[str, torch.Tensor], task_names: list[str], init_from: str | None,
                      seed: int) -> torch.Tensor:
    """The new task's starting embedding [t']: a trained task's row, or N(0, 1) like a trained task's init."""
    table = trained[EMBEDDING_KEY]  # [T, t']
    if init_from is not None:
        return table[task_names.index(init_from)].clone()
    return torch.randn(table.shape[1], generator=torch.Generator().manual_seed(seed))


def adaptation_model(run: RunToAdapt, task: str, embedding: torch.Tensor) -> HyperT5:
    """A one-task HyperT5 on the run's backbone, in eval mode on the accelerator's device: the run's
    hypernetworks and layer norms, `embedding` [t'] as the task's row."""
    model = build_model(run.recipe, [task], run.folder.backbone_dir)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in params.items():
            if param.requires_grad and name != EMBEDDING_KEY:
                param.copy_(run.trained[name])
        params[EMBEDDING_KEY].copy_(embedding[None])  # [1, t']
    return model.to(run.accelerator.device).eval()


def set_trainable(model: HyperT5, tune: str) -> int:
    """Freeze everything but the task embedding (and, with `tune`, the layer norms / hypernetworks);
    returns the number of parameters that learn."""
    embeddings = model.task_embeddings
    assert embeddings is not None  # an adaptation model has the new task's embedding
    model.requires_grad_(False)
    embeddings.weight.requires_grad_(True)
    if tune in ("layer-norms", "hypernet"):
        for module in model.backbone.modules():
            if is_t5_layer_norm(module):
                module.weight.requires_grad_(True)
    if tune == "hypernet":
        model.generators.requires_grad_(True)
        embeddings.requires_grad_(True)  # the projector, if the run has one
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run_tensors(model: HyperT5, trained: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The run's trained tensors, each as the adapted model holds it now (unchanged unless `tune` let it
    learn), with the new task's row appended to the task embeddings; on the CPU, ready to save."""
    params = dict(model.named_parameters())
    state = {name: params[name].detach().cpu().clone().contiguous() for name in trained if name != EMBEDDING_KEY}
    state[EMBEDDING_KEY] = torch.cat([trained[EMBEDDING_KEY], params[EMBEDDING_KEY].detach().cpu()])  # [T + 1, t']
    return state


def parameter_facts(recipe: Recipe, embedding: torch.Tensor, trainable: int) -> dict[str, int]:
    """What the new task added (one embedding), what learned, and what a plain per-task adapter would add."""
    return {"added": embedding.numel(), "trained": trainable, "per_task_adapter": per_task_adapter_parameters(recipe)}
