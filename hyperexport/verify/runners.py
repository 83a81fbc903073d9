"""Runners: one small interface over PyTorch (hypernetwork or folded) and an export's graphs on any
`GraphBackend` (ONNX Runtime, TensorRT), so `verify` treats every runtime alike (Polygraphy's runner design).
A runner is a context manager (activate / deactivate) whose `infer(inputs)` returns named numpy outputs:
- `logits` [B, T, V]: teacher-forced decoder logits (generate head);
- `scores` [B, K]: log-probability of each label string (classify head);
- `tokens` [B, N]: greedy generation (generate head; `generate_model.onnx` too, where the export has it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from hyperexport.contracts.names import CLASSIFY_GRAPH, ENCODER_GRAPH
from hyperexport.contracts.task_table import TASK_IDS_INPUT
from hyperexport.model.hyper_t5 import HyperT5
from hyperexport.runtime.generation import greedy_generate, one_graph_generate, teacher_forced_logits

if TYPE_CHECKING:
    from transformers import T5ForConditionalGeneration

    from hyperexport.contracts.export import GenerationIds
    from hyperexport.runtime.backends import GraphBackend


@dataclass(frozen=True)
class ParityInputs:
    input_ids: torch.Tensor  # [B, S]
    attention_mask: torch.Tensor  # [B, S]
    decoder_input_ids: torch.Tensor  # [B, T] (targets shifted right)
    label_ids: torch.Tensor  # [K, L] each label's tokens with </s>, -100 = padding
    max_new_tokens: int
    task_ids: torch.Tensor | None = None  # [B] a multi-task export's task-table row per example


def teacher_forced_label_scores(forward: Callable[..., torch.Tensor], shift_right: Callable,
                                 inputs: ParityInputs) -> torch.Tensor:
    """scores[b, k] = sum_t log p(label_k[t] | input b, label_k[<t]) with `forward(**kw) -> logits`."""
    scores = []
    for label in inputs.label_ids:  # K is small (2-3 labels; 26 for stsb)
        target = label[label >= 0].unsqueeze(0).expand(inputs.input_ids.shape[0], -1)  # [B, L_k]
        logits = forward(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                         decoder_input_ids=shift_right(target))  # [B, L_k, V]
        scores.append(torch.log_softmax(logits.float(), -1).gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1))
    return torch.stack(scores, dim=1)  # [B, K]


class TorchRunner:
    """A PyTorch seq2seq model: `HyperT5` (give `task_id`) or a folded `T5ForConditionalGeneration`."""

    def __init__(self, name: str, model: HyperT5 | T5ForConditionalGeneration, task_id: int | None = None):
        self.name, self.model, self.task_id = name, model.eval(), task_id

    def __enter__(self) -> TorchRunner:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _task_kwargs(self, batch: int) -> dict:
        return {} if self.task_id is None else {"task_ids": torch.full((batch,), self.task_id)}

    @torch.no_grad()
    def infer(self, inputs: ParityInputs) -> dict[str, np.ndarray]:
        task = self._task_kwargs(inputs.input_ids.shape[0])
        backbone = self.model.backbone if isinstance(self.model, HyperT5) else self.model
        forward = lambda **kw: self.model(**task, **kw).logits  # noqa: E731
        logits = forward(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                         decoder_input_ids=inputs.decoder_input_ids)
        tokens = self.model.generate(**task, input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                                     max_new_tokens=inputs.max_new_tokens, do_sample=False, num_beams=1)
        outputs = {"logits": logits.float().numpy(), "tokens": tokens.numpy()}
        if inputs.label_ids.numel():  # no labels: verify on token ids only (a run without a tokenizer)
            outputs["scores"] = teacher_forced_label_scores(forward, backbone._shift_right, inputs).numpy()
        return outputs


class ExportRunner:
    """An export's graphs on a `GraphBackend` (ONNX Runtime or TensorRT), whichever heads it holds:
    teacher-forced logits through the first-step decoder, label scores through the classify graph,
    greedy tokens through the one decode loop. Batches above the backend's limit run in chunks."""

    def __init__(self, name: str, backend: GraphBackend, ids: GenerationIds | None):
        self.name, self.backend, self.ids = name, backend, ids

    def __enter__(self) -> ExportRunner:
        self.backend.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.backend.__exit__(*exc)

    def infer(self, inputs: ParityInputs) -> dict[str, np.ndarray]:
        step = self.backend.max_batch or inputs.input_ids.shape[0]
        pad = self.ids.pad_token_id if self.ids is not None else 0
        return infer_in_chunks(self._infer, inputs, step, pad)

    def _infer(self, inputs: ParityInputs) -> dict[str, np.ndarray]:
        feeds = {"input_ids": inputs.input_ids.numpy(), "attention_mask": inputs.attention_mask.numpy()}
        extra = {} if inputs.task_ids is None else {TASK_IDS_INPUT: inputs.task_ids.numpy()}
        feeds.update(extra)
        outputs = {}
        if self.backend.has(CLASSIFY_GRAPH):
            outputs["scores"] = self.backend.infer(CLASSIFY_GRAPH, feeds)["scores"]
        if self.backend.has(ENCODER_GRAPH) and self.ids is not None:
            outputs["logits"] = teacher_forced_logits(self.backend, feeds["input_ids"], feeds["attention_mask"],
                                                      inputs.decoder_input_ids.numpy(), extra)  # [B, T, V]
            outputs["tokens"] = greedy_generate(self.backend, feeds["input_ids"], feeds["attention_mask"],
                                                inputs.max_new_tokens, self.ids, extra=extra)
        return outputs


class GenerateGraphRunner(ExportRunner):
    """`generate_model.onnx` (the whole greedy loop in one ONNX Runtime call): its tokens only."""

    def _infer(self, inputs: ParityInputs) -> dict[str, np.ndarray]:
        assert self.ids is not None
        return {"tokens": one_graph_generate(self.backend, inputs.input_ids.numpy(), inputs.attention_mask.numpy(),
                                             inputs.max_new_tokens, self.ids)}


def infer_in_chunks(infer: Callable[[ParityInputs], dict[str, np.ndarray]], inputs: ParityInputs, step: int,
                    pad_token_id: int) -> dict[str, np.ndarray]:
    """`infer` on slices of at most `step` rows, joined along the batch; generated tokens of chunks that
    stopped at different lengths are padded with `pad_token_id`, as `generate()` pads a batch."""
    task_ids = inputs.task_ids
    chunks = [infer(ParityInputs(inputs.input_ids[i:i + step], inputs.attention_mask[i:i + step],
                                 inputs.decoder_input_ids[i:i + step], inputs.label_ids, inputs.max_new_tokens,
                                 None if task_ids is None else task_ids[i:i + step]))
              for i in range(0, inputs.input_ids.shape[0], step)]
    merged = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0] if name != "tokens"}
    if "tokens" in chunks[0]:
        width = max(chunk["tokens"].shape[1] for chunk in chunks)
        merged["tokens"] = np.concatenate([np.pad(chunk["tokens"], ((0, 0), (0, width - chunk["tokens"].shape[1])),
                                                  constant_values=pad_token_id) for chunk in chunks])
    return merged
