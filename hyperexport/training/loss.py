"""Label-smoothed cross-entropy in the fairseq form the paper's code uses (method §7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def label_smoothed_nll_loss(
    logits: torch.Tensor,  # [B, T, V]
    labels: torch.Tensor,  # [B, T], IGNORE_INDEX on padding
    epsilon: float,
    reduction: str = "sum",
) -> torch.Tensor:
    """(1 - eps) * NLL + (eps / V) * sum_v(-log p_v), summed over target tokens ("sum", the paper's
    form) or averaged over them ("mean")."""
    lprobs = F.log_softmax(logits.float(), dim=-1)
    mask = labels != IGNORE_INDEX
    target = labels.clamp(min=0).unsqueeze(-1)
    nll = -lprobs.gather(-1, target).squeeze(-1)  # [B, T]
    smooth = -lprobs.sum(-1)  # [B, T]
    per_token = (1.0 - epsilon) * nll + (epsilon / lprobs.shape[-1]) * smooth
    total = (per_token * mask).sum()
    return total if reduction == "sum" else total / mask.sum().clamp(min=1)
