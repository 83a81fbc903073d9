"""`fold`: a plain `T5ForConditionalGeneration` with one materialized task's adapters as constants.

Each self-attention and feed-forward sublayer is wrapped with a `StaticAdapter` (down, activation, up,
LayerNorm, residual: the same operations `HyperT5` runs with generated weights), the run's trained T5
layer norms are loaded, and dropout is off. No hypernetwork, no task id: a graph ready to trace.
An adapter is non-linear, so unlike LoRA it cannot vanish into the backbone's weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from transformers.activations import ACT2FN

from hyperexport.contracts.run import RunFolder
from hyperexport.contracts.task import ADAPTER_PREFIX, BACKBONE_PREFIX, TaskFacts, TaskFolder
from hyperexport.errors import UserError
from hyperexport.model.adapter import ADAPTER_LAYER_NORM_EPS, STACKS

if TYPE_CHECKING:
    from transformers import T5ForConditionalGeneration

FEED_FORWARD, SELF_ATTENTION = 0, 1


class StaticAdapter(nn.Module):
    """y + LN(U act(D y + b_D) + b_U) with fixed tensors."""

    def __init__(self, tensors: dict[str, torch.Tensor], activation: str):
        super().__init__()
        m, d = tensors["down_weight"].shape
        self.down = nn.Linear(d, m)
        self.up = nn.Linear(m, d)
        self.layer_norm = nn.LayerNorm(d, eps=ADAPTER_LAYER_NORM_EPS)
        self.activation = ACT2FN[activation]
        with torch.no_grad():
            for module, prefix in ((self.down, "down"), (self.up, "up"), (self.layer_norm, "ln")):
                module.weight.copy_(tensors[f"{prefix}_weight"])
                module.bias.copy_(tensors[f"{prefix}_bias"])
        self.requires_grad_(False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:  # [B, S, d] -> [B, S, d]
        return y + self.layer_norm(self.up(self.activation(self.down(y))))


class AdaptedAttention(nn.Module):
    """T5Attention whose first output (after `o`) passes through the adapter."""

    def __init__(self, attention: nn.Module, adapter: nn.Module):  # a StaticAdapter, or stack's StackedAdapter
        super().__init__()
        self.attention, self.adapter = attention, adapter

    def forward(self, *args, **kwargs):
        output = self.attention(*args, **kwargs)
        return (self.adapter(output[0]), *output[1:])


class AdaptedFeedForward(nn.Module):
    """T5's DenseReluDense / gated FFN whose output (after `wo`) passes through the adapter."""

    def __init__(self, feed_forward: nn.Module, adapter: nn.Module):  # a StaticAdapter, or stack's StackedAdapter
        super().__init__()
        self.feed_forward, self.adapter = feed_forward, adapter

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.feed_forward(hidden_states))


def read_task(task_dir: Path) -> tuple[TaskFolder, dict[str, torch.Tensor]]:
    """A materialized task folder (its files checked by sha256) and its tensors."""
    task = TaskFolder.open(task_dir)
    try:
        tensors = load_file(str(task.adapters_file))
    except (SafetensorError, OSError) as error:
        raise UserError(f"cannot read {task.adapters_file}: {error}; materialize the task again") from None
    return task, tensors


def fold_task(backbone: T5ForConditionalGeneration, tensors: dict[str, torch.Tensor],
              activation: str) -> T5ForConditionalGeneration:
    """Wrap `backbone`'s sublayers with the task's static adapters and load its trained layer norms."""
    load_layer_norms(backbone, tensors)
    for stack in STACKS:
        for layer, block in enumerate(getattr(backbone, stack).block):
            attention, feed_forward = block.layer[0], block.layer[-1]
            attention.SelfAttention = AdaptedAttention(
                attention.SelfAttention,
                StaticAdapter(position_tensors(tensors, stack, layer, SELF_ATTENTION), activation))
            feed_forward.DenseReluDense = AdaptedFeedForward(
                feed_forward.DenseReluDense,
                StaticAdapter(position_tensors(tensors, stack, layer, FEED_FORWARD), activation))
    return backbone.eval()


def position_tensors(tensors: dict[str, torch.Tensor], stack: str, layer: int,
                     position: int) -> dict[str, torch.Tensor]:
    """One adapter's tensors (down_weight, ..., ln_bias) of a task file's `adapters.<stack>.*` [L, 2, ...]."""
    prefix = f"{ADAPTER_PREFIX}{stack}."
    return {key[len(prefix):]: t[layer, position] for key, t in tensors.items() if key.startswith(prefix)}


def load_layer_norms(backbone: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy a task file's `backbone.*` tensors (the run's trained T5 layer norms) into `backbone`."""
    norms = {key[len(BACKBONE_PREFIX):]: t for key, t in tensors.items() if key.startswith(BACKBONE_PREFIX)}
    parameters = dict(backbone.named_parameters())
    unknown = sorted(set(norms) - set(parameters))
    if unknown:
        raise UserError(f"the task's layer norm '{unknown[0]}' is not in this backbone: it was materialized from "
                        "another one")
    with torch.no_grad():
        for name, tensor in norms.items():
            if parameters[name].shape != tensor.shape:
                raise UserError(f"the task's layer norm '{name}' has shape {tuple(tensor.shape)}, the backbone's "
                                f"{tuple(parameters[name].shape)}: it was materialized from another backbone")
            parameters[name].copy_(tensor)


def load_folded_task(task_dir: Path) -> tuple[T5ForConditionalGeneration, TaskFacts]:
    """The plain backbone the task was materialized from, folded with the task: (model, task facts)."""
    task, tensors = read_task(task_dir)
    return fold_task(load_task_backbone(task), tensors, task.facts.adapter.activation), task.facts


def load_task_backbone(task: TaskFolder) -> T5ForConditionalGeneration:
    """The plain backbone (no adapters) a materialized task was made from."""
    from hyperexport.model.build import load_backbone

    backbone_config = RunFolder(task.run_dir).located_backbone(task.manifest.backbone)
    return load_backbone(backbone_config, seed=0, weights_dir=task.backbone_weights)
