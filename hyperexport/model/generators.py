"""Where adapter weights come from: the variants of method §3 and 1.9.

Each stack (encoder, decoder) owns one generator. A generator maps the batch's U distinct tasks to
one `AdapterWeights` for all L layers and both positions in a single batched call:
- `HyperNetPlusPlus`: one hypernet per stack, conditioned on [task, layer id, position] (HyperFormer++);
- `PerPositionHyperNets`: a hypernet per (layer, position), conditioned on the task (HyperFormer);
- `LayerHyperNet`: one hypernet per stack, conditioned on [task, layer id], with a generator set per
  position (the released configs/hyperformer.json, `unique_hyper_net`; method §3);
- `TaskAdapters`: plain per-task adapters with one post-LayerNorm per position (Adapter-dagger).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hyperexport.model.adapter import AdapterWeights

HYPERNET_INIT_STD = 1e-2  # method §4: every hypernet / projector / adapter Linear
PROJECTOR_LAYER_NORM_EPS = 1e-6
NUM_POSITIONS = 2


def init_linear(module: nn.Linear) -> nn.Linear:
    nn.init.normal_(module.weight, std=HYPERNET_INIT_STD)
    nn.init.zeros_(module.bias)
    return module


class TaskEmbeddings(nn.Module):
    """Raw task embeddings z (N(0,1)), shared by both stacks, with the optional projector h_I."""

    def __init__(self, num_tasks: int, dim: int, hidden_dim: int, raw_dim: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_tasks, raw_dim or dim))  # [T, t']
        self.projector = None
        if raw_dim is not None:
            self.projector = nn.Sequential(
                init_linear(nn.Linear(raw_dim, hidden_dim)), nn.ReLU(), init_linear(nn.Linear(hidden_dim, dim))
            )

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:  # [U] -> [U, t]
        z = self.weight.index_select(0, task_ids)
        return z if self.projector is None else self.projector(z)


class HyperNetPlusPlus(nn.Module):
    """HyperFormer++: I = LN(MLP([z, l_i, p_j])), then one Linear generator per adapter tensor."""

    def __init__(self, num_layers: int, d_model: int, bottleneck: int, dim: int, hidden_dim: int):
        super().__init__()
        self.shape = (num_layers, d_model, bottleneck)
        self.layer_id_embeddings = nn.Embedding(num_layers, dim)
        self.position_embeddings = nn.Embedding(NUM_POSITIONS, dim)
        self.projector = nn.Sequential(
            init_linear(nn.Linear(3 * dim, hidden_dim)), nn.ReLU(), init_linear(nn.Linear(hidden_dim, dim))
        )
        self.projector_norm = nn.LayerNorm(dim, eps=PROJECTOR_LAYER_NORM_EPS)
        m, d = bottleneck, d_model
        self.down_weight = init_linear(nn.Linear(dim, m * d))
        self.down_bias = init_linear(nn.Linear(dim, m))
        self.up_weight = init_linear(nn.Linear(dim, d * m))
        self.up_bias = init_linear(nn.Linear(dim, d))
        self.ln_weight = init_linear(nn.Linear(dim, d))
        self.ln_bias = init_linear(nn.Linear(dim, d))

    def forward(self, task_embeddings: torch.Tensor) -> AdapterWeights:  # [U, t]
        (num_tasks, dim), (num_layers, d, m) = task_embeddings.shape, self.shape
        grid = (num_tasks, num_layers, NUM_POSITIONS, dim)
        condition = torch.cat(
            [
                task_embeddings[:, None, None, :].expand(grid),
                self.layer_id_embeddings.weight[None, :, None, :].expand(grid),
                self.position_embeddings.weight[None, None, :, :].expand(grid),
            ],
            dim=-1,
        )  # [U, L, 2, 3t]
        i = self.projector_norm(self.projector(condition))  # [U, L, 2, t]
        lead = grid[:3]
        return AdapterWeights(
            down_weight=self.down_weight(i).view(*lead, m, d),
            down_bias=self.down_bias(i),
            up_weight=self.up_weight(i).view(*lead, d, m),
            up_bias=self.up_bias(i),
            ln_weight=self.ln_weight(i),
            ln_bias=self.ln_bias(i),
        )


class BatchedLinear(nn.Module):
    """N independent Linear(in, out) layers applied to the same input in one einsum."""

    def __init__(self, num: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, out_features, in_features).normal_(std=HYPERNET_INIT_STD))
        self.bias = nn.Parameter(torch.zeros(num, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., N, out]
        return torch.einsum("...i,noi->...no", x, self.weight) + self.bias


class PerPositionHyperNets(nn.Module):
    """HyperFormer: every (layer, position) owns its generators, all reading the task embedding."""

    def __init__(self, num_layers: int, d_model: int, bottleneck: int, dim: int):
        super().__init__()
        self.shape = (num_layers, d_model, bottleneck)
        n, m, d = num_layers * NUM_POSITIONS, bottleneck, d_model
        self.down_weight = BatchedLinear(n, dim, m * d)
        self.down_bias = BatchedLinear(n, dim, m)
        self.up_weight = BatchedLinear(n, dim, d * m)
        self.up_bias = BatchedLinear(n, dim, d)
        self.ln_weight = BatchedLinear(n, dim, d)
        self.ln_bias = BatchedLinear(n, dim, d)

    def forward(self, task_embeddings: torch.Tensor) -> AdapterWeights:  # [U, t]
        num_layers, d, m = self.shape
        lead = (task_embeddings.shape[0], num_layers, NUM_POSITIONS)
        return AdapterWeights(
            down_weight=self.down_weight(task_embeddings).view(*lead, m, d),
            down_bias=self.down_bias(task_embeddings).view(*lead, m),
            up_weight=self.up_weight(task_embeddings).view(*lead, d, m),
            up_bias=self.up_bias(task_embeddings).view(*lead, d),
            ln_weight=self.ln_weight(task_embeddings).view(*lead, d),
            ln_bias=self.ln_bias(task_embeddings).view(*lead, d),
        )


class LayerHyperNet(nn.Module):
    """I = LN(MLP([z, l_i])) per (task, layer), then separate generators for each position."""

    def __init__(self, num_layers: int, d_model: int, bottleneck: int, dim: int, hidden_dim: int):
        super().__init__()
        self.shape = (num_layers, d_model, bottleneck)
        self.layer_id_embeddings = nn.Embedding(num_layers, dim)
        self.projector = nn.Sequential(
            init_linear(nn.Linear(2 * dim, hidden_dim)), nn.ReLU(), init_linear(nn.Linear(hidden_dim, dim))
        )
        self.projector_norm = nn.LayerNorm(dim, eps=PROJECTOR_LAYER_NORM_EPS)
        m, d = bottleneck, d_model
        self.down_weight = BatchedLinear(NUM_POSITIONS, dim, m * d)
        self.down_bias = BatchedLinear(NUM_POSITIONS, dim, m)
        self.up_weight = BatchedLinear(NUM_POSITIONS, dim, d * m)
        self.up_bias = BatchedLinear(NUM_POSITIONS, dim, d)
        self.ln_weight = BatchedLinear(NUM_POSITIONS, dim, d)
        self.ln_bias = BatchedLinear(NUM_POSITIONS, dim, d)

    def forward(self, task_embeddings: torch.Tensor) -> AdapterWeights:  # [U, t]
        (num_tasks, dim), (num_layers, d, m) = task_embeddings.shape, self.shape
        grid = (num_tasks, num_layers, dim)
        condition = torch.cat(
            [task_embeddings[:, None, :].expand(grid), self.layer_id_embeddings.weight[None, :, :].expand(grid)],
            dim=-1,
        )  # [U, L, 2t]
        i = self.projector_norm(self.projector(condition))  # [U, L, t]
        lead = (num_tasks, num_layers, NUM_POSITIONS)
        return AdapterWeights(
            down_weight=self.down_weight(i).view(*lead, m, d),  # [U, L, 2, m, d]
            down_bias=self.down_bias(i),
            up_weight=self.up_weight(i).view(*lead, d, m),
            up_bias=self.up_bias(i),
            ln_weight=self.ln_weight(i),
            ln_bias=self.ln_bias(i),
        )


class TaskAdapters(nn.Module):
    """Adapter-dagger: per-task adapters at every position; the post-LayerNorm is shared across tasks."""

    def __init__(self, num_tasks: int, num_layers: int, d_model: int, bottleneck: int):
        super().__init__()
        grid, m, d = (num_tasks, num_layers, NUM_POSITIONS), bottleneck, d_model
        self.down_weight = nn.Parameter(torch.empty(*grid, m, d).normal_(std=HYPERNET_INIT_STD))
        self.down_bias = nn.Parameter(torch.zeros(*grid, m))
        self.up_weight = nn.Parameter(torch.empty(*grid, d, m).normal_(std=HYPERNET_INIT_STD))
        self.up_bias = nn.Parameter(torch.zeros(*grid, d))
        self.ln_weight = nn.Parameter(torch.ones(num_layers, NUM_POSITIONS, d))
        self.ln_bias = nn.Parameter(torch.zeros(num_layers, NUM_POSITIONS, d))

    def forward(self, task_ids: torch.Tensor) -> AdapterWeights:  # [U]
        lead = (task_ids.shape[0], *self.ln_weight.shape)
        return AdapterWeights(
            down_weight=self.down_weight.index_select(0, task_ids),
            down_bias=self.down_bias.index_select(0, task_ids),
            up_weight=self.up_weight.index_select(0, task_ids),
            up_bias=self.up_bias.index_select(0, task_ids),
            ln_weight=self.ln_weight.expand(lead),
            ln_bias=self.ln_bias.expand(lead),
        )


def bottleneck_size(d_model: int, reduction_factor: int) -> int:
    """m = d // r (method §2), at least 1."""
    return max(1, math.floor(d_model / reduction_factor))
