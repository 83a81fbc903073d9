"""Greedy decoding over an export's generate graphs, on any `GraphBackend`.

The loop is what `generate()` does for T5 with `do_sample=False, num_beams=1`: start from
`decoder_start_token_id`, take the argmax of the last logits, pad rows that have already produced
`</s>`, stop when every row has or after `max_new_tokens` steps. Two layouts of the graphs:
- one decoder (`export.one_decoder`, what `export --format onnx` writes): the encoder also returns each
  layer's cross-attention keys/values; `decoder_with_past_model.onnx` runs every step, the first with
  an empty self-attention past;
- optimum's three graphs (TensorRT engines, older exports): the first step runs `decoder_model.onnx`,
  which returns the cross-attention keys/values, fed back unchanged to every later step.
Past keys/values go from one step to the next as the backend's own values where it offers that
(`keeping_infer`: ONNX Runtime keeps them as `OrtValue`s); the loop reads only the logits.
`one_graph_generate` runs `generate_model.onnx` instead, the whole loop inside ONNX Runtime.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hyperexport.contracts.export import GenerationIds
from hyperexport.contracts.names import DECODER_GRAPH, DECODER_WITH_PAST_GRAPH, ENCODER_GRAPH, GENERATE_MODEL_GRAPH
from hyperexport.runtime.backends import Feeds, GraphBackend, keeping_infer, value_shape

PRESENT, PAST = "present.", "past_key_values."
CROSS, SELF = ".encoder.", ".decoder."


def greedy_generate(backend: GraphBackend, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int,
                    ids: GenerationIds, min_new_tokens: int = 0, extra: Feeds | None = None) -> np.ndarray:
    """Token ids [B, 1 + n] (the start token first, n <= max_new_tokens), as `generate()` returns them;
    `min_new_tokens` forbids `</s>` before that many steps, like `generate(min_new_tokens=...)`;
    `extra` feeds go to every graph that takes them (a multi-task export's `task_ids`)."""
    infer = keeping_infer(backend)
    attention_mask = np.asarray(attention_mask, dtype=np.int64)  # [B, S]
    extra = dict(extra or {})
    batch = attention_mask.shape[0]
    past, first = encode(backend, input_ids, attention_mask, extra)
    tokens = np.full((batch, 1), ids.decoder_start_token_id, dtype=np.int64)  # [B, 1]
    finished = np.zeros(batch, dtype=bool)
    for step in range(max_new_tokens):
        feeds = {"input_ids": tokens[:, -1:], "encoder_attention_mask": attention_mask, **extra, **past}
        outputs = infer(first if step == 0 else DECODER_WITH_PAST_GRAPH, feeds, PRESENT)
        logits = np.array(outputs["logits"][:, -1, :], dtype=np.float32)  # [B, V]; bf16 (ml_dtypes) too
        if step < min_new_tokens:
            logits[:, ids.eos_token_id] = -np.inf
        next_tokens = np.where(finished, ids.pad_token_id, logits.argmax(-1).astype(np.int64))  # [B]
        tokens = np.concatenate([tokens, next_tokens[:, None]], axis=1)
        finished |= next_tokens == ids.eos_token_id
        if finished.all():
            break
        # present.{i}.decoder.* replace the self-attention past; present.{i}.encoder.* (first step only) stay
        past.update({PAST + name[len(PRESENT):]: value for name, value in outputs.items() if name.startswith(PRESENT)})
    return tokens


def encode(backend: GraphBackend, input_ids: np.ndarray, attention_mask: np.ndarray,
           extra: Feeds) -> tuple[dict[str, Any], str]:
    """The feeds every decoder step starts from, and the graph of the first step: with one decoder, the
    cross-attention past from the encoder and an empty self-attention past [B, heads, 0, d_kv]; with
    optimum's graphs, the encoder states for `decoder_model.onnx`."""
    outputs = keeping_infer(backend)(ENCODER_GRAPH, {"input_ids": np.asarray(input_ids, dtype=np.int64),
                                                     "attention_mask": attention_mask, **extra}, PRESENT)
    cross = {PAST + name[len(PRESENT):]: value for name, value in outputs.items() if name.startswith(PRESENT)}
    if not cross:
        return {"encoder_hidden_states": outputs["last_hidden_state"]}, DECODER_GRAPH  # [B, S, d]
    batch, heads, _, d_kv = value_shape(next(iter(cross.values())))
    empty = np.zeros((batch, heads, 0, d_kv), dtype=np.asarray(outputs["last_hidden_state"][:0]).dtype)
    return {**cross, **{name.replace(CROSS, SELF): empty for name in cross}}, DECODER_WITH_PAST_GRAPH


def teacher_forced_logits(backend: GraphBackend, input_ids: np.ndarray, attention_mask: np.ndarray,
                          decoder_input_ids: np.ndarray, extra: Feeds | None = None) -> np.ndarray:
    """Logits [B, T, V] of `decoder_input_ids` [B, T] in one decoder call (targets shifted right);
    `extra` as for `greedy_generate`."""
    attention_mask = np.asarray(attention_mask, dtype=np.int64)
    extra = dict(extra or {})
    past, first = encode(backend, input_ids, attention_mask, extra)
    feeds = {"input_ids": np.asarray(decoder_input_ids, dtype=np.int64), "encoder_attention_mask": attention_mask,
             **extra}
    return backend.infer(first, {**feeds, **{k: _numpy(v) for k, v in past.items()}})["logits"]


def one_graph_generate(backend: GraphBackend, input_ids: np.ndarray, attention_mask: np.ndarray,
                       max_new_tokens: int, ids: GenerationIds, min_new_tokens: int = 0) -> np.ndarray:
    """`greedy_generate`'s tokens [B, 1 + n] from `generate_model.onnx` (ONNX Runtime's BeamSearch with
    one beam): one call per batch, the loop inside the runtime."""
    sequences = backend.infer(GENERATE_MODEL_GRAPH, {
        "input_ids": np.asarray(input_ids, dtype=np.int32),
        "attention_mask": np.asarray(attention_mask, dtype=np.int32),
        "max_length": np.array([max_new_tokens + 1], dtype=np.int32),
        "min_length": np.array([min_new_tokens + 1 if min_new_tokens else 0], dtype=np.int32)})["sequences"]
    return np.asarray(sequences, dtype=np.int64)


def _numpy(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else value
