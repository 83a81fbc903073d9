"""`stack`: a plain T5 with many materialized tasks' adapters as constants, each example adapted by its own task.

The multi-task form of `fold`: every self-attention and feed-forward sublayer is wrapped (`AdaptedAttention`,
`AdaptedFeedForward`) with a `StackedAdapter` whose six tensors are tables [T, ...] over the T tasks;
`apply_adapter` gathers each example's row (index_select) and applies it with batched matmuls, so one batch
mixes tasks. Which row an example takes is the `TaskRouter`'s: each graph's entry point sets it from its
`task_ids` input. The backbone and the run's trained layer norms are loaded once (every task of a run
shares them, which `shared_digest` checks). No hypernetwork, no task-dependent branch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.activations import ACT2FN

from hyperexport.contracts.task import BACKBONE_PREFIX
from hyperexport.fold import (
    FEED_FORWARD,
    SELF_ATTENTION,
    AdaptedAttention,
    AdaptedFeedForward,
    load_layer_norms,
    position_tensors,
)
from hyperexport.model.adapter import POSITIONS, STACKS, AdapterWeights, apply_adapter

if TYPE_CHECKING:
    from transformers import T5ForConditionalGeneration

ADAPTER_TENSORS = tuple(field.name for field in fields(AdapterWeights))  # down_weight, ..., ln_bias


class TaskRouter:
    """The task-table row of each example [B] while a graph runs; its entry point sets it."""

    def __init__(self) -> None:
        self.task_ids: torch.Tensor | None = None

    @contextmanager
    def routing(self, task_ids: torch.Tensor | None) -> Iterator[None]:  # [B] int64; None: `rows` refuses to run
        previous, self.task_ids = self.task_ids, task_ids
        try:
            yield
        finally:
            self.task_ids = previous

    def rows(self) -> torch.Tensor:
        if self.task_ids is None:
            raise RuntimeError("a multi-task model ran without task_ids: run it inside `router.routing(task_ids)`")
        return self.task_ids


class StackedAdapter(nn.Module):
    """y + LN(U act(D y + b_D) + b_U) with each example's task's row of tables [T, ...]."""

    def __init__(self, rows: Sequence[dict[str, torch.Tensor]], activation: str, router: TaskRouter, site: str):
        super().__init__()
        for name in ADAPTER_TENSORS:  # down_weight [T, m, d], down_bias [T, m], up_weight [T, d, m], ... [T, d]
            self.register_buffer(name, torch.stack([row[name] for row in rows]).contiguous())
        self.activation = ACT2FN[activation]
        self.router, self.site = router, site  # site: "<stack>.<layer>.<position>", the tables' names in graphs

    def tables(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in ADAPTER_TENSORS}

    def forward(self, y: torch.Tensor) -> torch.Tensor:  # [B, S, d] -> [B, S, d]
        weights = AdapterWeights(*self.tables().values())
        return apply_adapter(y, weights, self.router.rows(), self.activation)


@dataclass(frozen=True)
class StackedT5:
    model: T5ForConditionalGeneration  # with StackedAdapters, eval mode
    router: TaskRouter

    def adapters(self) -> list[StackedAdapter]:
        return [module for module in self.model.modules() if isinstance(module, StackedAdapter)]


def adapter_site(stack: str, layer: int, position: int) -> str:
    """'decoder.1.self_attention': where an adapter sits (its tables are named after it in the graphs)."""
    return f"{stack}.{layer}.{POSITIONS[position]}"


def stack_tasks(backbone: T5ForConditionalGeneration, tasks: Sequence[dict[str, torch.Tensor]],
                activation: str) -> StackedT5:
    """Wrap `backbone`'s sublayers with the tasks' stacked adapters (row t: `tasks[t]`, each a task
    file's tensors) and load their shared trained layer norms."""
    if len({shared_digest(tensors) for tensors in tasks}) != 1:
        raise ValueError("the tasks' trained layer norms differ: stack tasks of one run")
    load_layer_norms(backbone, tasks[0])
    router = TaskRouter()

    def adapter(stack: str, layer: int, position: int) -> StackedAdapter:
        rows = [position_tensors(tensors, stack, layer, position) for tensors in tasks]
        return StackedAdapter(rows, activation, router, adapter_site(stack, layer, position))

    for stack in STACKS:
        for layer, block in enumerate(getattr(backbone, stack).block):
            attention, feed_forward = block.layer[0], block.layer[-1]
            attention.SelfAttention = AdaptedAttention(attention.SelfAttention, adapter(stack, layer, SELF_ATTENTION))
            feed_forward.DenseReluDense = AdaptedFeedForward(feed_forward.DenseReluDense,
                                                             adapter(stack, layer, FEED_FORWARD))
    return StackedT5(backbone.eval(), router)


def shared_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of a task file's `backbone.*` tensors (the run's trained layer norms), names and bytes."""
    digest = hashlib.sha256()
    for key in sorted(k for k in tensors if k.startswith(BACKBONE_PREFIX)):
        digest.update(key.encode())
        digest.update(tensor_bytes(tensors[key]))
    return digest.hexdigest()


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor of any dtype (bf16 included), in row-major order."""
    return tensor.detach().contiguous().cpu().flatten().view(torch.uint8).numpy().tobytes()
