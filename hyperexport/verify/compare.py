"""What `verify` compares, for single- and multi-task exports alike: the inputs (a task's evaluation split, a
seeded random batch), each runner's outputs against the reference's with per-precision tolerances (NaN/Inf
anywhere fails), and the task metric of each head's predictions."""

from __future__ import annotations

import copy
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from hyperexport.contracts import publish
from hyperexport.contracts.export import ExportFolder
from hyperexport.contracts.names import GENERATE_MODEL_GRAPH, PARITY_REPORT_FILE
from hyperexport.contracts.task import TaskFacts
from hyperexport.errors import UserError
from hyperexport.recipe.schema import BackboneConfig
from hyperexport.runtime.backends import OnnxRuntimeBackend, onnxruntime_provider
from hyperexport.tasks.metrics import compute_metrics
from hyperexport.verify.runners import ExportRunner, GenerateGraphRunner, ParityInputs

if TYPE_CHECKING:
    from transformers import T5ForConditionalGeneration

    from hyperexport.contracts.export import GenerationIds
    from hyperexport.model.trained import TrainedRun

# Per precision: max |delta| of logits and scores; tokens: fraction of generated sequences that differ;
# metric: max |delta| of each metric value (points). fp32 must match the reference exactly up to float
# rounding: 1e-4, plus `relative` times the largest finite reference value (rounding grows with the values:
# a demo run's sst2 logits and scores reach ~8, where fp32 ONNX Runtime differed from PyTorch by 7.4e-5 on
# logits and 1.0e-4 on label scores, in optimum's layout and in ours alike). int8 (dynamic quantization)
# rounds every MatMul's activations to 8 bits, about 1% relative error per layer, on logits of magnitude ~40
# in the demo: tensors move by a few tenths, and the gate that matters is the task metric, within 1 point.
TOLERANCES = {
    "fp32": {"logits": 1e-4, "scores": 1e-4, "tokens": 0.0, "metric": 0.0, "relative": 1e-5},
    "fp16": {"logits": 0.1, "scores": 0.1, "tokens": 0.05, "metric": 1.0},
    "bf16": {"logits": 0.5, "scores": 0.5, "tokens": 0.05, "metric": 1.0},
    "int8": {"logits": 2.0, "scores": 2.0, "tokens": 0.05, "metric": 1.0},
}
# TensorRT engines: the same bounds, except fp32 logits and scores at 1e-3 (plans are built with TF32 off,
# but their kernels sum in another order than PyTorch's). Not yet measured: scripts/gpu_check.sh prints it.
TENSORRT_TOLERANCES = {**TOLERANCES, "fp32": {**TOLERANCES["fp32"], "logits": 1e-3, "scores": 1e-3}}
REFERENCE, FOLDED = "torch_hypernet", "torch_folded"
ONNX_RUNTIME, TENSORRT = "onnxruntime", "tensorrt"  # the export's runners
GENERATE_GRAPH_RUNNER = "onnxruntime_generate_model"  # generate_model.onnx, where the export has it
RANDOM_BATCH = (4, 12)  # batch, sequence length of the random-token input set


def task_parity(loaded: TrainedRun, task: str, folded: T5ForConditionalGeneration, facts: TaskFacts,
                export_runners: list, precision: str, max_examples: int,
                task_row: int | None = None) -> tuple[list[dict], list[dict]]:
    """The comparisons and metric rows of one task: the reference (the run's hypernetwork model), the folded
    model in fp32 (and in the export's half precision: the PyTorch view of what it costs) and
    `export_runners` on the task's evaluation split and a random batch (`task_row`: each example's row of
    a multi-task export's task table)."""
    from hyperexport.export.classify import label_token_ids
    from hyperexport.export.precision import HALF_PRECISIONS, cast_to_precision
    from hyperexport.verify.runners import TorchRunner

    token_ids_only = loaded.tokenizer is None  # an imported run without a tokenizer: no text, no labels
    label_ids = (torch.empty(0, 1, dtype=torch.long) if loaded.tokenizer is None
                 else label_token_ids(loaded.tokenizer, facts.labels))
    input_sets = {"random": random_inputs(loaded, facts, label_ids)}
    if not token_ids_only:
        evaluation, targets = evaluation_inputs(loaded, task, facts, label_ids, max_examples)
        input_sets = {"evaluation": evaluation, **input_sets}
    if task_row is not None:
        input_sets = {name: replace(inputs, task_ids=torch.full((inputs.input_ids.shape[0],), task_row))
                      for name, inputs in input_sets.items()}
    runners = [TorchRunner(REFERENCE, loaded.model, loaded.model.task_id(task)), TorchRunner(FOLDED, folded)]
    if precision in HALF_PRECISIONS:
        runners.append(TorchRunner(f"{FOLDED}_{precision}", cast_to_precision(copy.deepcopy(folded), precision)))
    outputs = {}
    for runner in runners + export_runners:
        with runner:
            outputs[runner.name] = {name: runner.infer(inputs) for name, inputs in input_sets.items()}
    tolerances = {name: (TENSORRT_TOLERANCES if name == TENSORRT else TOLERANCES)[
                      "fp32" if name == FOLDED else precision] for name in outputs}
    comparisons = [row for name in input_sets for row in compare(outputs, name, tolerances)]
    metrics = [] if token_ids_only else metric_parity(
        {runner: by_set["evaluation"] for runner, by_set in outputs.items()}, targets, loaded, task, facts, tolerances)
    return comparisons, metrics


def check_same_backbone(loaded: TrainedRun, export: ExportFolder) -> None:
    """Refuse a run whose backbone is not the one the export was made from (parity would be meaningless)."""
    made_from = export.manifest.backbone
    if made_from is None:  # an export from before the field: nothing to compare
        return
    given = loaded.folder.portable_backbone(loaded.recipe.backbone)
    differing = [f.name for f in fields(BackboneConfig) if getattr(given, f.name) != getattr(made_from, f.name)]
    if differing:
        key = differing[0]
        field = "backbone" if key == "config" else f"backbone.{key}"
        raise UserError(f"run {loaded.path} has {field} {getattr(given, key)!r}, the export was made from "
                        f"{getattr(made_from, key)!r}: pass the run the export came from ({export.source_run})")


def evaluation_inputs(loaded, task: str, facts: TaskFacts, label_ids: torch.Tensor,
                       max_examples: int) -> tuple[ParityInputs, list[str]]:
    """The task's test split (first `max_examples`) as model inputs, and its target strings."""
    from hyperexport.data.collate import collate
    from hyperexport.training.task_data import load_task_data

    examples = load_task_data(loaded.recipe, splits=("test",))[task].test[:max_examples]
    batch = collate(loaded.tokenizer, examples, {task: 0}, facts.max_source_length, facts.max_new_tokens)
    inputs = ParityInputs(batch["input_ids"], batch["attention_mask"],
                          loaded.model.backbone._shift_right(batch["labels"]), label_ids, facts.max_new_tokens)
    return inputs, [e.target for e in examples]


def random_inputs(loaded, facts: TaskFacts, label_ids: torch.Tensor) -> ParityInputs:
    generator = torch.Generator().manual_seed(0)
    config = loaded.model.backbone.config
    vocab = len(loaded.tokenizer) if loaded.tokenizer is not None else config.vocab_size
    input_ids = torch.randint(3, vocab, RANDOM_BATCH, generator=generator)
    input_ids[:, -1] = loaded.tokenizer.eos_token_id if loaded.tokenizer is not None else config.eos_token_id
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, RANDOM_BATCH[1] // 2:] = 0  # one padded row
    decoder_ids = torch.randint(3, vocab, (RANDOM_BATCH[0], 3), generator=generator)
    return ParityInputs(input_ids, attention_mask, decoder_ids, label_ids, facts.max_new_tokens)


def compare(outputs: dict, input_set: str, tolerances: dict[str, dict]) -> list[dict]:
    reference = outputs[REFERENCE][input_set]
    rows = []
    for runner, by_set in outputs.items():
        if runner == REFERENCE:
            continue
        for name, value in by_set[input_set].items():
            expected = reference[name]
            finite = bool(np.isfinite(value).all() and np.isfinite(expected).all())
            diff = token_mismatch(value, expected) if name == "tokens" else max_abs_diff(value, expected)
            bound = tolerance(tolerances[runner], name, expected)
            rows.append({"inputs": input_set, "runner": runner, "output": name, "max_abs_diff": diff,
                         "tolerance": bound, "finite": finite, "passed": finite and diff <= bound})
    return rows


def tolerance(bounds: dict[str, float], output: str, expected: np.ndarray) -> float:
    """The bound on max |delta| of `output`: its absolute tolerance, plus (logits, scores) the precision's
    `relative` tolerance times the largest finite |value| of the reference."""
    if output == "tokens" or not bounds.get("relative"):
        return bounds[output]
    finite = np.abs(expected[np.isfinite(expected)])
    return bounds[output] + bounds["relative"] * float(finite.max(initial=0.0))


def max_abs_diff(value: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(value.astype(np.float64) - expected).max()) if value.shape == expected.shape else float("inf")


def token_mismatch(value: np.ndarray, expected: np.ndarray) -> float:
    """The fraction of generated sequences that differ anywhere (shorter ones padded with 0)."""
    width = max(value.shape[1], expected.shape[1])
    value, expected = (np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in (value, expected))
    return float((value != expected).any(axis=1).mean())


def metric_parity(outputs: dict, targets: list[str], loaded, task: str, facts: TaskFacts,
                   tolerances: dict[str, dict]) -> list[dict]:
    """The task metric of each head's predictions per runner; each must equal the reference's."""
    from hyperexport.runtime.heads import decoded_texts, label_results
    spec = loaded.task_spec(task)
    rows = []
    for head, predict in (("classify", lambda o: [r["label"] for r in label_results(o["scores"], facts.labels)]),
                          ("generate", lambda o: decoded_texts(loaded.tokenizer, o["tokens"]))):
        values = {runner: compute_metrics(spec, predict(o), targets) for runner, o in outputs.items()
                  if ("scores" if head == "classify" else "tokens") in o}
        gaps = {r: max(abs(v[k] - values[REFERENCE][k]) for k in v) for r, v in values.items() if r != REFERENCE}
        rows.append({"head": head, "values": values, "max_abs_diff": gaps,
                     "tolerance": {r: tolerances[r]["metric"] for r in gaps},
                     "passed": all(gap <= tolerances[r]["metric"] for r, gap in gaps.items())})
    return rows


def export_ids(export: ExportFolder) -> GenerationIds | None:
    return export.generation_ids if "generate" in export.heads else None


def onnxruntime_runner(export: ExportFolder) -> tuple[ExportRunner | None, list[dict]]:
    """ONNX Runtime over the export's graphs where a provider here runs their precision; else None and
    the `not_run` entry that says why (a report with one does not pass)."""
    precision = export.manifest.precision
    provider = onnxruntime_provider(precision)
    if provider is None:
        return None, [{"runner": ONNX_RUNTIME, "reason": f"{precision} graphs need ONNX Runtime's "
                       "CUDAExecutionProvider (onnxruntime-gpu on an NVIDIA GPU); not verified here"}]
    return ExportRunner(ONNX_RUNTIME, OnnxRuntimeBackend(export.path, provider), export_ids(export)), []


def write_report(export_dir: Path, report: dict) -> dict:
    """`report` as the export's parity_report.json; returns it."""
    report_file = Path(export_dir) / PARITY_REPORT_FILE
    with publish.write_errors(report_file, "free disk space or make the export folder writable"):
        publish.write_json(report_file, report)
    return report


def generate_graph_runners(export: ExportFolder) -> list[GenerateGraphRunner]:
    """`generate_model.onnx` (the whole greedy loop in one call) where the export has one and ONNX Runtime
    here runs its precision; else none."""
    provider = onnxruntime_provider(export.manifest.precision)
    if provider is None or not export.has(GENERATE_MODEL_GRAPH):
        return []
    return [GenerateGraphRunner(GENERATE_GRAPH_RUNNER, OnnxRuntimeBackend(export.path, provider), export_ids(export))]
