"""Runners: one small interface over PyTorch (hypernetwork or folded) and ONNX Runtime, so `verify`
treats every backend alike (Polygraphy's runner design). A runner is a context manager (activate /
deactivate) whose `infer(inputs)` returns named numpy outputs:
- `logits` [B, T, V]: teacher-forced decoder logits (generate head);
- `scores` [B, K]: log-probability of each label string (classify head);
- `tokens` [B, N]: greedy generation (generate head).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hyperexport.contracts.names import DECODER_GRAPH, ENCODER_GRAPH


@dataclass(frozen=True)
class ParityInputs:
    input_ids: torch.Tensor  # [B, S]
    attention_mask: torch.Tensor  # [B, S]
    decoder_input_ids: torch.Tensor  # [B, T] (targets shifted right)
    label_ids: torch.Tensor  # [K, L] each label's tokens with </s>, -100 = padding
    max_new_tokens: int


def teacher_forced_label_scores(forward: Callable[..., torch.Tensor], shift_right: Callable, inputs: ParityInputs) -> torch.Tensor:
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

    def __init__(self, name: str, model: torch.nn.Module, task_id: int | None = None):
        self.name, self.model, self.task_id = name, model.eval(), task_id

    def __enter__(self) -> "TorchRunner":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _task_kwargs(self, batch: int) -> dict:
        return {} if self.task_id is None else {"task_ids": torch.full((batch,), self.task_id)}

    @torch.no_grad()
    def infer(self, inputs: ParityInputs) -> dict[str, np.ndarray]:
        task = self._task_kwargs(inputs.input_ids.shape[0])
        backbone = getattr(self.model, "backbone", self.model)
        forward = lambda **kw: self.model(**task, **kw).logits  # noqa: E731
        logits = forward(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                         decoder_input_ids=inputs.decoder_input_ids)
        tokens = self.model.generate(**task, input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                                     max_new_tokens=inputs.max_new_tokens, do_sample=False, num_beams=1)
        outputs = {"logits": logits.float().numpy(), "tokens": tokens.numpy()}
        if inputs.label_ids.numel():  # no labels: verify on token ids only (a run without a tokenizer)
            outputs["scores"] = teacher_forced_label_scores(forward, backbone._shift_right, inputs).numpy()
        return outputs


def onnxruntime_provider(precision: str) -> str | None:
    """The ONNX Runtime execution provider that can run graphs of `precision` here, or None."""
    import onnxruntime as ort

    from hyperexport.export.precision import CPU_RUNNABLE

    if precision in CPU_RUNNABLE:
        return "CPUExecutionProvider"
    return "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() else None


class OnnxRuntimeRunner:
    """ONNX Runtime over an export folder (CPU provider unless told otherwise): whichever heads it holds."""

    name = "onnxruntime"

    def __init__(self, export_dir: Path, classify_file: str, provider: str = "CPUExecutionProvider"):
        self.export_dir, self.classify_file, self.provider = Path(export_dir), classify_file, provider
        self.sessions: dict = {}
        self.generator = None

    def __enter__(self) -> "OnnxRuntimeRunner":
        import onnxruntime as ort

        for name in (ENCODER_GRAPH, DECODER_GRAPH, self.classify_file):
            if (self.export_dir / name).is_file():
                self.sessions[name] = ort.InferenceSession(str(self.export_dir / name), providers=[self.provider])
        if DECODER_GRAPH in self.sessions:
            from optimum.onnxruntime import ORTModelForSeq2SeqLM

            self.generator = ORTModelForSeq2SeqLM.from_pretrained(self.export_dir, use_cache=True, use_merged=False,
                                                                  provider=self.provider)
        return self

    def __exit__(self, *exc) -> None:
        self.sessions, self.generator = {}, None

    def infer(self, inputs: ParityInputs) -> dict[str, np.ndarray]:
        feeds = {"input_ids": inputs.input_ids.numpy(), "attention_mask": inputs.attention_mask.numpy()}
        outputs = {}
        if self.classify_file in self.sessions:
            outputs["scores"] = self.sessions[self.classify_file].run(["scores"], feeds)[0]
        if self.generator is not None:
            outputs["logits"] = self._logits(feeds, inputs.decoder_input_ids.numpy())
            outputs["tokens"] = self.generator.generate(
                input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                max_new_tokens=inputs.max_new_tokens, do_sample=False, num_beams=1).numpy()
        return outputs

    def _logits(self, feeds: dict, decoder_input_ids: np.ndarray) -> np.ndarray:
        hidden = self.sessions[ENCODER_GRAPH].run(None, feeds)[0]
        decoder = self.sessions[DECODER_GRAPH]
        available = {"input_ids": decoder_input_ids, "encoder_hidden_states": hidden,
                     "encoder_attention_mask": feeds["attention_mask"]}
        wanted = {i.name for i in decoder.get_inputs()}
        return decoder.run(["logits"], {k: v for k, v in available.items() if k in wanted})[0]
