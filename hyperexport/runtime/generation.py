"""Greedy decoding over the three generate graphs, for any backend that runs one graph at a time.

`infer(graph, inputs) -> outputs` runs one of "encoder", "decoder" (first step, no past) or
"decoder_with_past" on named numpy arrays; ONNX Runtime sessions, TensorRT engines and a Triton
server (one model per graph) all fit behind it. The loop is what `generate()` does for T5 with
`do_sample=False, num_beams=1`: start from `decoder_start_token_id`, take the argmax of the last
logits, pad rows that have already produced `</s>`, stop when every row has or after
`max_new_tokens` steps. The cross-attention keys/values come from the first decoder step and are fed
back unchanged; the self-attention ones grow by one token per step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hyperexport.contracts.names import GENERATE_GRAPHS

GraphInfer = Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]
PRESENT, PAST = "present.", "past_key_values."


def greedy_generate(infer: GraphInfer, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int,
                    decoder_start_token_id: int, eos_token_id: int, pad_token_id: int,
                    min_new_tokens: int = 0) -> np.ndarray:
    """Token ids [B, 1 + n] (the start token first, n <= max_new_tokens), as `generate()` returns them;
    `min_new_tokens` forbids `</s>` before that many steps, like `generate(min_new_tokens=...)`."""
    input_ids = np.asarray(input_ids, dtype=np.int64)  # [B, S]
    attention_mask = np.asarray(attention_mask, dtype=np.int64)  # [B, S]
    batch = input_ids.shape[0]
    hidden = infer("encoder", {"input_ids": input_ids, "attention_mask": attention_mask})["last_hidden_state"]
    tokens = np.full((batch, 1), decoder_start_token_id, dtype=np.int64)  # [B, 1]
    finished = np.zeros(batch, dtype=bool)
    past: dict[str, np.ndarray] = {}
    for step in range(max_new_tokens):
        feeds = {"input_ids": tokens[:, -1:], "encoder_attention_mask": attention_mask}
        if step == 0:
            outputs = infer("decoder", {**feeds, "encoder_hidden_states": hidden})
        else:
            outputs = infer("decoder_with_past", {**feeds, **past})
        logits = np.array(outputs["logits"][:, -1, :], dtype=np.float32)  # [B, V]; bf16 (ml_dtypes) too
        if step < min_new_tokens:
            logits[:, eos_token_id] = -np.inf
        next_tokens = logits.argmax(-1).astype(np.int64)  # [B]
        next_tokens = np.where(finished, pad_token_id, next_tokens)
        tokens = np.concatenate([tokens, next_tokens[:, None]], axis=1)
        finished |= next_tokens == eos_token_id
        if finished.all():
            break
        # present.{i}.decoder.* replace the self-attention past; present.{i}.encoder.* (first step only) stay
        past.update({PAST + name[len(PRESENT):]: value for name, value in outputs.items() if name.startswith(PRESENT)})
    return tokens


def onnxruntime_infer(folder) -> GraphInfer:
    """`infer` over an ONNX export's generate graphs with ONNX Runtime on the CPU (sessions made once)."""
    from pathlib import Path

    import onnxruntime as ort

    sessions = {graph: ort.InferenceSession(str(Path(folder) / file), providers=["CPUExecutionProvider"])
                for graph, file in GENERATE_GRAPHS.items()}

    def infer(graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = sessions[graph]
        wanted = {i.name for i in session.get_inputs()}
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {k: v for k, v in inputs.items() if k in wanted})))

    return infer
