"""`HyperT5`: an unmodified transformers T5 whose self-attention and feed-forward outputs pass through
task-conditioned adapters (method §1), with per-example task ids.

The adapters are attached as forward hooks on `SelfAttention` (its first output) and `DenseReluDense`,
so they run after the sublayer's output projection and before its dropout and residual add; T5's
modeling code and state-dict keys stay as they are. Cross-attention gets no adapter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.activations import ACT2FN

from hyperexport.model.adapter import STACKS, AdapterWeights, apply_adapter
from hyperexport.model.generators import (
    HyperNetPlusPlus,
    LayerHyperNet,
    PerPositionHyperNets,
    TaskAdapters,
    TaskEmbeddings,
    bottleneck_size,
)

if TYPE_CHECKING:
    from transformers import T5ForConditionalGeneration

FEED_FORWARD, SELF_ATTENTION = 0, 1
T5_NORM_CLASSES = ("T5LayerNorm", "FusedRMSNorm")


class HyperT5(nn.Module):
    """A T5ForConditionalGeneration plus one adapter-weight generator per stack."""

    def __init__(self, backbone: T5ForConditionalGeneration, task_names: Sequence[str], model_config):
        super().__init__()
        self.backbone = backbone
        self.task_names = tuple(task_names)
        self.model_config = model_config
        self.activation = ACT2FN[model_config.activation]
        config = backbone.config
        layers = {"encoder": config.num_layers, "decoder": config.num_decoder_layers}
        m = bottleneck_size(config.d_model, model_config.reduction_factor)
        self.task_embeddings = _task_embeddings(len(self.task_names), model_config)
        self.generators = nn.ModuleDict(
            {s: _generator(model_config, len(self.task_names), layers[s], config.d_model, m) for s in STACKS}
        )
        self._active: tuple[dict[str, AdapterWeights], torch.Tensor | None] | None = None
        self._attach_hooks()
        freeze_all_but_adapters_and_layer_norms(self)

    # ---- adapter weights ------------------------------------------------------------------------
    def adapter_weights(self, task_ids: torch.Tensor) -> dict[str, AdapterWeights]:
        """All layers' and positions' adapter tensors of the given tasks, per stack: [U, L, 2, ...]."""
        condition = task_ids if self.task_embeddings is None else self.task_embeddings(task_ids)
        return {stack: self.generators[stack](condition) for stack in STACKS}

    def task_id(self, name: str) -> int:
        return self.task_names.index(name)

    @contextmanager
    def adapting(self, task_ids: torch.Tensor) -> Iterator[None]:
        """Generate the batch's adapter weights once; the hooks use them until the block exits."""
        unique, inverse = torch.unique(task_ids, return_inverse=True)
        task_index = None if unique.numel() == 1 else inverse
        self._active = (self.adapter_weights(unique), task_index)
        try:
            yield
        finally:
            self._active = None

    # ---- entry points ---------------------------------------------------------------------------
    def forward(self, task_ids: torch.Tensor, **backbone_inputs):
        """`task_ids` [B] long; every other argument goes to T5ForConditionalGeneration.forward."""
        with self.adapting(task_ids):
            return self.backbone(**backbone_inputs)

    @torch.no_grad()
    def generate(self, task_ids: torch.Tensor, **generate_kwargs) -> torch.Tensor:
        with self.adapting(task_ids):
            sequences = self.backbone.generate(**generate_kwargs)
        assert isinstance(sequences, torch.Tensor), "HyperT5.generate returns the token ids only"
        return sequences

    # ---- hooks ------------------------------------------------------------------------------------
    def _attach_hooks(self) -> None:
        for stack in STACKS:
            for layer, block in enumerate(getattr(self.backbone, stack).block):
                attention, feed_forward = block.layer[0].SelfAttention, block.layer[-1].DenseReluDense
                attention.register_forward_hook(partial(self._adapt_attention, stack, layer))
                feed_forward.register_forward_hook(partial(self._adapt_feed_forward, stack, layer))

    def _adapt(self, stack: str, layer: int, position: int, y: torch.Tensor) -> torch.Tensor:
        if self._active is None:
            raise RuntimeError("HyperT5 ran without task ids: call model(task_ids=..., ...) or "
                               "model.generate(task_ids=...)")
        weights, task_index = self._active
        if task_index is not None and y.shape[0] != task_index.shape[0]:  # beams / num_return_sequences
            task_index = task_index.repeat_interleave(y.shape[0] // task_index.shape[0])
        return apply_adapter(y, weights[stack].at(layer, position), task_index, self.activation)

    def _adapt_attention(self, stack: str, layer: int, module, inputs, output):
        return (self._adapt(stack, layer, SELF_ATTENTION, output[0]), *output[1:])

    def _adapt_feed_forward(self, stack: str, layer: int, module, inputs, output):
        return self._adapt(stack, layer, FEED_FORWARD, output)


def _task_embeddings(num_tasks: int, model_config) -> TaskEmbeddings | None:
    if model_config.variant == "adapters":
        return None
    return TaskEmbeddings(
        num_tasks,
        dim=model_config.task_embedding_dim,
        hidden_dim=model_config.hypernet_hidden_dim,
        raw_dim=model_config.task_projector_input_dim,
    )


def _generator(model_config, num_tasks: int, num_layers: int, d_model: int, bottleneck: int) -> nn.Module:
    dim = model_config.task_embedding_dim
    if model_config.variant == "hyperformer++":
        return HyperNetPlusPlus(num_layers, d_model, bottleneck, dim, model_config.hypernet_hidden_dim)
    if model_config.variant == "hyperformer":
        return PerPositionHyperNets(num_layers, d_model, bottleneck, dim)
    if model_config.variant == "hyperformer-layer":
        return LayerHyperNet(num_layers, d_model, bottleneck, dim, model_config.hypernet_hidden_dim)
    return TaskAdapters(num_tasks, num_layers, d_model, bottleneck)


def is_t5_layer_norm(module: nn.Module) -> bool:
    return type(module).__name__ in T5_NORM_CLASSES


def freeze_all_but_adapters_and_layer_norms(model: HyperT5) -> None:
    """method §4: train hypernets/adapters, task embeddings and every T5 layer norm; freeze the rest."""
    model.backbone.requires_grad_(False)
    for module in model.backbone.modules():
        if is_t5_layer_norm(module):
            module.weight.requires_grad_(True)
    model.generators.requires_grad_(True)
    if model.task_embeddings is not None:
        model.task_embeddings.requires_grad_(True)
