"""The classify head of a multi-task export: each example's own task's label strings scored in one pass.

`TaskLabelScorer` holds every task's label token ids in one table [T, K, L] (K: the most labels of any
task, L: the longest label; -100 pads both). An example of a task with k labels becomes exactly k decoder
rows (ragged: no row for a padded label slot, so a binary task costs what it costs in its single-task
graph), decoded to the batch's longest label only; the encoder runs once per example and the
cross-attention keys and values are projected once per example and gathered for its rows. `scores`
[batch, K] holds each label's log-probability, -inf where the example's task has fewer than K labels.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hyperexport.contracts.task_table import TASK_IDS_INPUT
from hyperexport.export.classify import cross_attention_once_per_example
from hyperexport.export.task_tables import LABEL_PAD
from hyperexport.export.tracing import DEFAULT_OPSET, quiet_tracing
from hyperexport.stack import StackedT5


class TaskLabelScorer(nn.Module):
    """scores[b, k] = sum_t log p(label k of task(b), token t | input b, its tokens < t); -inf past task(b)'s labels."""

    label_table: torch.Tensor  # a buffer

    def __init__(self, stacked: StackedT5, label_table: torch.Tensor):  # [T, K, L], -100 = padding
        super().__init__()
        self.model, self.router = stacked.model, stacked.router
        self.register_buffer("label_table", label_table.clone())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                task_ids: torch.Tensor) -> torch.Tensor:  # [B, S], [B, S], [B] -> [B, K]
        labels = self.label_table.index_select(0, task_ids)  # [B, K, L]
        batch, slots = labels.shape[0], labels.shape[1]
        rows = (labels[:, :, 0] >= 0).flatten().nonzero().squeeze(1)  # [R] = b * K + k of each real label
        row_example = torch.div(rows, slots, rounding_mode="floor")  # [R]
        row_labels = labels.flatten(0, 1).index_select(0, rows)  # [R, L]
        longest = (row_labels >= 0).sum(1).max()  # the batch's longest label, </s> included
        # a 0-d tensor, not an int: the traced graph keeps the batch's label length dynamic
        row_labels = row_labels.index_select(1, torch.arange(longest))  # type: ignore[call-overload]  # [R, L_batch]
        with self.router.routing(task_ids):
            encoded = self.model.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                         use_cache=False).last_hidden_state  # [B, S, d]
        gather = lambda projected: projected.index_select(0, row_example)  # noqa: E731  [B, ...] -> [R, ...]
        with self.router.routing(task_ids.index_select(0, row_example)), \
                cross_attention_once_per_example(self.model, gather):
            logits = self.model(encoder_outputs=(encoded,), attention_mask=gather(attention_mask),
                                decoder_input_ids=self._shift_right(row_labels), use_cache=False).logits  # [R, L, V]
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        real = row_labels >= 0  # [R, L_batch]
        token_scores = log_probs.gather(-1, row_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [R, L_batch]
        row_scores = (token_scores * real.float()).sum(-1)  # [R]
        scores = row_scores.new_full((batch * slots,), float("-inf"))
        return scores.scatter(0, rows, row_scores).view(batch, slots)

    def _shift_right(self, labels: torch.Tensor) -> torch.Tensor:  # [R, L] -> [R, L], as T5's _shift_right
        start_id, pad_id = self.model.config.decoder_start_token_id, self.model.config.pad_token_id
        assert start_id is not None and pad_id is not None  # T5's config sets both
        start = torch.full_like(labels[:, :1], start_id)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == LABEL_PAD, pad_id)


def export_task_classify_graph(scorer: TaskLabelScorer, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """The scorer as one graph: input_ids, attention_mask, task_ids -> scores [batch, num_labels]."""
    example = (torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with torch.no_grad(), quiet_tracing():
        torch.onnx.export(scorer.eval(), example, str(path),
                          input_names=["input_ids", "attention_mask", TASK_IDS_INPUT],
                          output_names=["scores"], opset_version=opset, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch_size", 1: "sequence_length"},
                                        "attention_mask": {0: "batch_size", 1: "sequence_length"},
                                        TASK_IDS_INPUT: {0: "batch_size"},
                                        "scores": {0: "batch_size", 1: "num_labels"}})
