"""The classify head: every label string's log-probability in one pass, no generation loop.

`LabelScorer` wraps a plain or folded T5: the encoder runs once per example, the decoder once over all
K label strings (teacher-forced), and `scores[b, k]` sums label k's token log-probabilities. The
cross-attention keys and values are projected once per example and repeated for its K label rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from hyperexport.export.tracing import DEFAULT_OPSET, quiet_tracing

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, T5ForConditionalGeneration


class LabelScorer(nn.Module):
    """scores[b, k] = sum_t log p(label_k token t | input b, label_k tokens < t): no generation loop."""

    label_ids: torch.Tensor  # buffers
    label_mask: torch.Tensor
    decoder_input_ids: torch.Tensor

    def __init__(self, model: T5ForConditionalGeneration, label_ids: torch.Tensor):  # label_ids [K, T], -100 = padding
        super().__init__()
        self.model = model
        self.register_buffer("label_ids", label_ids.clamp(min=0), persistent=False)  # [K, T]
        self.register_buffer("label_mask", (label_ids >= 0).float(), persistent=False)  # [K, T]
        self.register_buffer("decoder_input_ids", model._shift_right(label_ids), persistent=False)  # [K, T]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # [B, S] -> [B, K]
        batch, num_labels = input_ids.shape[0], self.label_ids.shape[0]
        encoded = self.model.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                     use_cache=False).last_hidden_state  # [B, S, d]
        mask = attention_mask.repeat_interleave(num_labels, dim=0)  # [B*K, S]
        decoder_ids = self.decoder_input_ids.repeat(batch, 1)  # [B*K, T]
        expand = lambda projected: projected.repeat_interleave(num_labels, dim=0)  # noqa: E731  [B, ...] -> [B*K, ...]
        with cross_attention_once_per_example(self.model, expand):  # encoded stays [B, S, d]
            logits = self.model(encoder_outputs=(encoded,), attention_mask=mask, decoder_input_ids=decoder_ids,
                                use_cache=False).logits  # [B*K, T, V]
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        token_scores = log_probs.gather(-1, self.label_ids.repeat(batch, 1).unsqueeze(-1)).squeeze(-1)  # [B*K, T]
        return (token_scores * self.label_mask.repeat(batch, 1)).sum(-1).view(batch, num_labels)


class _ExpandedProjection(nn.Module):
    """A cross-attention key or value projection of each example's encoder states, expanded to the example's
    label rows: [B, S, d] -> [R, S, inner] (not R projections of expanded states)."""

    def __init__(self, projection: nn.Module, expand: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.projection, self.expand = projection, expand

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.expand(self.projection(states))


@contextlib.contextmanager
def cross_attention_once_per_example(model: T5ForConditionalGeneration, expand: Callable[[torch.Tensor], torch.Tensor]):
    """Every decoder layer's cross-attention `k`/`v` projected once per example and expanded to its label
    rows by `expand` ([B, ...] -> [R, ...]) while the block runs."""
    attentions = [block.layer[1].EncDecAttention for block in model.decoder.block]
    originals = [(attention.k, attention.v) for attention in attentions]
    for attention, (k, v) in zip(attentions, originals):
        attention.k, attention.v = _ExpandedProjection(k, expand), _ExpandedProjection(v, expand)
    try:
        yield
    finally:
        for attention, (k, v) in zip(attentions, originals):
            attention.k, attention.v = k, v


def label_token_ids(tokenizer: PreTrainedTokenizerBase, labels: list[str] | tuple[str, ...]) -> torch.Tensor:
    """Each label string's token ids with </s>, padded with -100: [K, T]."""
    encoded = [tokenizer(label).input_ids for label in labels]
    length = max(len(ids) for ids in encoded)
    return torch.tensor([ids + [-100] * (length - len(ids)) for ids in encoded])


def export_classify_graph(model: T5ForConditionalGeneration, label_ids: torch.Tensor, path: Path,
                          opset: int = DEFAULT_OPSET) -> None:
    """The `LabelScorer` of a plain or folded T5 as one graph: input_ids, attention_mask -> scores."""
    scorer = LabelScorer(model, label_ids).eval()
    example = (torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long))
    with torch.no_grad(), quiet_tracing():
        torch.onnx.export(scorer, example, str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["scores"], opset_version=opset, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch_size", 1: "sequence_length"},
                                        "attention_mask": {0: "batch_size", 1: "sequence_length"},
                                        "scores": {0: "batch_size"}})
