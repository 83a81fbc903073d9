"""Greedy decoding over the three generate graphs of an export, on any `GraphBackend`.

The loop is what `generate()` does for T5 with `do_sample=False, num_beams=1`: start from
`decoder_start_token_id`, take the argmax of the last logits, pad rows that have already produced
`</s>`, stop when every row has or after `max_new_tokens` steps. The first decoder step
(`decoder_model.onnx`, no past) returns the cross-attention keys/values, fed back unchanged to every
later step (`decoder_with_past_model.onnx`); the self-attention ones grow by one token per step.
"""

from __future__ import annotations

import numpy as np

from hyperexport.contracts.export import GenerationIds
from hyperexport.contracts.names import (
    DECODER_GRAPH,
    DECODER_WITH_PAST_GRAPH,
    ENCODER_GRAPH,
)
from hyperexport.runtime.backends import Feeds, GraphBackend

PRESENT, PAST = "present.", "past_key_values."


def greedy_generate(backend: GraphBackend, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int,
                    ids: GenerationIds, min_new_tokens: int = 0, extra: Feeds | None = None) -> np.ndarray:
    """Token ids [B, 1 + n] (the start token first, n <= max_new_tokens), as `generate()` returns them;
    `min_new_tokens` forbids `</s>` before that many steps, like `generate(min_new_tokens=...)`;
    `extra` feeds go to every graph that takes them (a multi-task export's `task_ids`)."""
    input_ids = np.asarray(input_ids, dtype=np.int64)  # [B, S]
    attention_mask = np.asarray(attention_mask, dtype=np.int64)  # [B, S]
    extra = dict(extra or {})
    batch = input_ids.shape[0]
    hidden = backend.infer(ENCODER_GRAPH, {"input_ids": input_ids, "attention_mask": attention_mask,
                                           **extra})["last_hidden_state"]  # [B, S, d]
    tokens = np.full((batch, 1), ids.decoder_start_token_id, dtype=np.int64)  # [B, 1]
    finished = np.zeros(batch, dtype=bool)
    past: dict[str, np.ndarray] = {}
    for step in range(max_new_tokens):
        feeds = {"input_ids": tokens[:, -1:], "encoder_attention_mask": attention_mask, **extra}
        if step == 0:
            outputs = backend.infer(DECODER_GRAPH, {**feeds, "encoder_hidden_states": hidden})
        else:
            outputs = backend.infer(DECODER_WITH_PAST_GRAPH, {**feeds, **past})
        logits = np.array(outputs["logits"][:, -1, :], dtype=np.float32)  # [B, V]; bf16 (ml_dtypes) too
        if step < min_new_tokens:
            logits[:, ids.eos_token_id] = -np.inf
        next_tokens = logits.argmax(-1).astype(np.int64)  # [B]
        next_tokens = np.where(finished, ids.pad_token_id, next_tokens)
        tokens = np.concatenate([tokens, next_tokens[:, None]], axis=1)
        finished |= next_tokens == ids.eos_token_id
        if finished.all():
            break
        # present.{i}.decoder.* replace the self-attention past; present.{i}.encoder.* (first step only) stay
        past.update({PAST + name[len(PRESENT):]: value for name, value in outputs.items() if name.startswith(PRESENT)})
    return tokens
