"""The two heads, written once against `GraphBackend`: every client (predict, the deployed Triton
client, the served models, verify, bench) labels examples through `label_examples`.

- classify: `classify_model.onnx` gives each label string's log-probability; the label is the argmax,
  with the scores and their softmax (the label set's renormalised probabilities). Regression grids
  (stsb) also take the argmax value, not the probability-weighted mean.
- generate: the greedy loop (`runtime.generation`), decoded without special tokens and stripped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from hyperexport.contracts.names import CLASSIFY_GRAPH, ENCODER_GRAPH
from hyperexport.errors import UserError
from hyperexport.runtime.backends import Feeds, GraphBackend
from hyperexport.runtime.examples import token_batches
from hyperexport.runtime.generation import greedy_generate

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hyperexport.contracts.export import GenerationIds
    from hyperexport.contracts.task import TaskFacts

HEADS = ("classify", "generate")
DEFAULT_BATCH_SIZE = 16


def available_heads(backend: GraphBackend) -> tuple[str, ...]:
    return tuple(head for head, graph in zip(HEADS, (CLASSIFY_GRAPH, ENCODER_GRAPH)) if backend.has(graph))


def label_examples(backend: GraphBackend, tokenizer: PreTrainedTokenizerBase, facts: TaskFacts, sources: list[str],
                   ids: GenerationIds | None = None, head: str | None = None,
                   batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict]:
    """One result per source, in order: `{"index", "label"}`, plus `"scores"` and `"probabilities"` from
    the classify head. `head`: classify or generate (default: classify where the backend has it)."""
    present = available_heads(backend)
    head = head or present[0]
    if head not in present or (head == "generate" and ids is None):
        raise UserError(f"head '{head}' is not available for {facts.task}: use {' or '.join(present)}")
    step = min(batch_size, backend.max_batch or batch_size)
    batches = token_batches(tokenizer, sources, facts.max_source_length, step)
    if head == "classify":
        results = label_results(label_scores(backend, batches), facts.labels)
    else:
        assert ids is not None
        tokens = [greedy_generate(backend, b["input_ids"], b["attention_mask"], facts.max_new_tokens, ids)
                  for b in batches]
        texts = [text for chunk in tokens for text in decoded_texts(tokenizer, chunk)]
        results = [{"index": index, "label": text} for index, text in enumerate(texts)]
    return [{**result, "label_name": facts.label_name(result["label"])} for result in results]


def decoded_texts(tokenizer: PreTrainedTokenizerBase, tokens: np.ndarray | Sequence) -> list[str]:
    """Generated token ids [B, T] as label texts: special tokens dropped, whitespace stripped."""
    return [text.strip() for text in tokenizer.batch_decode(tokens, skip_special_tokens=True)]


def label_scores(backend: GraphBackend, batches: Iterable[Feeds]) -> np.ndarray:
    """[N, K] label log-probabilities of every batch, joined."""
    return np.concatenate([backend.infer(CLASSIFY_GRAPH, batch)["scores"] for batch in batches])


def label_results(scores: np.ndarray, labels: Sequence[str]) -> list[dict]:
    """Results from [N, K] label log-probabilities: the argmax label, the scores, and their softmax."""
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    return [{"index": index, "label": labels[int(row.argmax())],
             "scores": {label: float(s) for label, s in zip(labels, row)},
             "probabilities": {label: float(p) for label, p in zip(labels, probs)}}
            for index, (row, probs) in enumerate(zip(scores, probabilities))]
