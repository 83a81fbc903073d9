"""Do the runtimes compute the same model? Teacher-forced log-probabilities of the same random targets,
compared with PyTorch eager fp32 on the same weights (greedy tokens of a random model are trivially equal:
it repeats one token, so they prove nothing).

Per runtime: the largest and the mean |delta| of the targets' log-probabilities, and (where the runtime
returns whole distributions) the fraction of positions whose argmax token agrees. ONNX Runtime's adapted
exports are compared with the hypernetwork model, the plain-backbone ones, PyTorch in the peers'
process and CTranslate2 with the plain backbone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from hyperexport.bench.subject import Subject, random_inputs
from hyperexport.runtime.backends import OnnxRuntimeBackend
from hyperexport.runtime.generation import teacher_forced_logits

if TYPE_CHECKING:
    from hyperexport.bench.peers import PeerWorker
    from hyperexport.bench.variants import Variants

REFERENCES = {"ort_fp32": "torch_hypernet", "ort_int8": "torch_hypernet", "ort_plain_backbone": "torch_plain",
              "ort_int8_plain_backbone": "torch_plain"}
BATCH, SOURCE_TOKENS, TARGET_TOKENS = 4, 32, 8


def agreement(subject: Subject, built: Variants, worker: PeerWorker | None = None) -> dict:
    """{runtime: {"reference", "max_abs_logprob_diff", "mean_abs_logprob_diff", "argmax_agreement"}}."""
    input_ids, mask = random_inputs(subject, BATCH, SOURCE_TOKENS)  # [B, S]
    vocab = min(len(subject.tokenizer), subject.model.backbone.config.vocab_size)
    targets = torch.randint(3, vocab, (BATCH, TARGET_TOKENS), generator=torch.Generator().manual_seed(7))  # [B, L]
    start = subject.model.backbone.config.decoder_start_token_id
    assert start is not None  # T5's config sets it
    decoder_ids = torch.cat([torch.full((BATCH, 1), start), targets[:, :-1]], dim=1)  # shifted right
    task_ids = torch.full((BATCH,), subject.model.task_id(subject.task))
    with torch.no_grad():
        reference = {"torch_hypernet": subject.model(task_ids=task_ids, input_ids=input_ids, attention_mask=mask,
                                                     decoder_input_ids=decoder_ids).logits.float().numpy(),
                     "torch_plain": built.models["plain"](input_ids=input_ids, attention_mask=mask,
                                                          decoder_input_ids=decoder_ids).logits.float().numpy()}
    rows = {}
    for variant, against in REFERENCES.items():
        with OnnxRuntimeBackend(built.folders[("generate", variant)]) as backend:
            logits = teacher_forced_logits(backend, input_ids.numpy(), mask.numpy(), decoder_ids.numpy())
        rows[variant] = _compare(_log_softmax(logits), _log_softmax(reference[against]), targets.numpy(), against)
    if worker is not None:
        peers = worker.logprobs({"input_ids": input_ids.numpy(), "attention_mask": mask.numpy(),
                                 "targets": targets.numpy(), "decoder_start_token_id": np.array(start)})
        plain = _log_softmax(reference["torch_plain"])
        for name, values in peers.items():
            rows[name] = _compare(values, plain, targets.numpy(), "torch_plain")
    return rows


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _compare(values: np.ndarray, reference: np.ndarray, targets: np.ndarray, against: str) -> dict:
    """`values`: log-probabilities [B, L, V] (a distribution per position) or [B, L] (the targets' only)."""
    picked = lambda lp: np.take_along_axis(lp, targets[..., None], -1)[..., 0]  # noqa: E731
    ours = picked(values) if values.ndim == 3 else values
    delta = np.abs(ours - picked(reference))
    argmax = float((values.argmax(-1) == reference.argmax(-1)).mean()) if values.ndim == 3 else None
    return {"reference": against, "max_abs_logprob_diff": float(delta.max()),
            "mean_abs_logprob_diff": float(delta.mean()), "argmax_agreement": argmax}
