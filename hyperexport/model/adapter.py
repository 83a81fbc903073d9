"""The adapter computation shared by every variant: `y + LN(U act(D y + b_D) + b_U)` (method §2).

A variant only decides where the weights come from. Whatever produces them hands over one
`AdapterWeights` per stack, holding every layer's and position's tensors for the U distinct tasks
of a batch; `apply_adapter` then adapts a sublayer output for each example's task.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

ADAPTER_LAYER_NORM_EPS = 1e-5
POSITIONS = ("feed_forward", "self_attention")  # index 0 = after the FFN, 1 = after self-attention (method §3)
STACKS = ("encoder", "decoder")


@dataclass(frozen=True)
class AdapterWeights:
    """Adapter tensors of one stack for U tasks, L layers and the 2 positions; layout (out, in)."""

    down_weight: torch.Tensor  # [U, L, 2, m, d]
    down_bias: torch.Tensor  # [U, L, 2, m]
    up_weight: torch.Tensor  # [U, L, 2, d, m]
    up_bias: torch.Tensor  # [U, L, 2, d]
    ln_weight: torch.Tensor  # [U, L, 2, d]  post-adapter LayerNorm gamma
    ln_bias: torch.Tensor  # [U, L, 2, d]  post-adapter LayerNorm beta

    def at(self, layer: int, position: int) -> AdapterWeights:
        """The tensors of one (layer, position), keeping the task axis: [U, ...]."""
        return AdapterWeights(*(getattr(self, f.name)[:, layer, position] for f in fields(self)))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def apply_adapter(
    y: torch.Tensor,  # [B, S, d] sublayer output
    weights: AdapterWeights,  # one position: down_weight [U, m, d], ... ln_bias [U, d]
    task_index: torch.Tensor | None,  # [B] row of `weights` for each example; None when U == 1
    activation,
) -> torch.Tensor:  # [B, S, d]
    """Adapt each example's sublayer output with its task's adapter."""
    if task_index is None:
        return _apply_shared(y, weights, activation)
    w = AdapterWeights(*(t.index_select(0, task_index) for t in weights.tensors().values()))
    z = torch.baddbmm(w.down_bias.unsqueeze(1), y, w.down_weight.transpose(1, 2))  # [B, S, m]
    u = torch.baddbmm(w.up_bias.unsqueeze(1), activation(z), w.up_weight.transpose(1, 2))  # [B, S, d]
    width = [int(u.shape[-1])]  # a constant when traced: ONNX's LayerNormalization takes no runtime width
    normed = F.layer_norm(u, width, eps=ADAPTER_LAYER_NORM_EPS)
    return y + normed * w.ln_weight.unsqueeze(1) + w.ln_bias.unsqueeze(1)


def _apply_shared(y: torch.Tensor, weights: AdapterWeights, activation) -> torch.Tensor:
    """Every example has the same task (U == 1): plain matmuls."""
    w = AdapterWeights(*(t[0] for t in weights.tensors().values()))
    u = F.linear(activation(F.linear(y, w.down_weight, w.down_bias)), w.up_weight, w.up_bias)
    return y + F.layer_norm(u, u.shape[-1:], w.ln_weight, w.ln_bias, eps=ADAPTER_LAYER_NORM_EPS)
