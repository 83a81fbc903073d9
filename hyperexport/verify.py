"""`verify`: the same inputs through every runner, compared with the hypernetwork model.

Inputs: the task's evaluation (test) split and a seeded batch of random token ids. Runners: PyTorch
with the hypernetwork (the reference, from the run), PyTorch folded (from the materialized task),
ONNX Runtime (the export). Per runner and output: max |delta| against a tolerance (fp32 logits and
scores: 1e-4; greedy tokens: equal); NaN/Inf anywhere fails; the task metric from each head must
equal the reference's. The report goes to `<export>/parity_report.json`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hyperexport import artifacts
from hyperexport.errors import UserError
from hyperexport.runners import OnnxRuntimeRunner, ParityInputs, TorchRunner

TOLERANCES = {"logits": 1e-4, "scores": 1e-4, "tokens": 0}  # fp32; tokens must be identical
REFERENCE = "torch_hypernet"
RANDOM_BATCH = (4, 12)  # batch, sequence length of the random-token input set


def verify(export_dir: str | Path, run: str | Path | None = None, max_examples: int = 200) -> dict:
    """Compare every runner with the hypernetwork model; write and return the parity report."""
    from hyperexport.fold import load_folded_task
    from hyperexport.materialize import TASKS_DIR
    from hyperexport.onnx_export import CLASSIFY_FILE, label_token_ids
    from hyperexport.run import load_run

    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise UserError(f"no export at {export_dir}: run `hyperexport export --task <task>`")
    manifest = artifacts.check_manifest(export_dir)
    loaded = load_run(run if run is not None else manifest["source_run"])
    task = manifest["task"]
    folded, facts = load_folded_task(loaded.path / TASKS_DIR / task)
    label_ids = label_token_ids(loaded.tokenizer, facts["labels"])
    evaluation, targets = _evaluation_inputs(loaded, task, facts, label_ids, max_examples)
    input_sets = {"evaluation": evaluation, "random": _random_inputs(loaded, facts, label_ids)}
    runners = [TorchRunner(REFERENCE, loaded.model, loaded.model.task_id(task)),
               TorchRunner("torch_folded", folded), OnnxRuntimeRunner(export_dir, CLASSIFY_FILE)]
    outputs = {}
    for runner in runners:
        with runner:
            outputs[runner.name] = {name: runner.infer(inputs) for name, inputs in input_sets.items()}
    comparisons = [c for name in input_sets for c in _compare(outputs, name)]
    metrics = _metric_parity({r: o["evaluation"] for r, o in outputs.items()}, targets, loaded, task, facts)
    report = {"export": str(export_dir), "run": str(loaded.path), "task": task, "reference": REFERENCE,
              "precision": manifest.get("precision", "fp32"), "comparisons": comparisons, "metrics": metrics,
              "passed": all(c["passed"] for c in comparisons + metrics)}
    artifacts.write_json(export_dir / artifacts.PARITY_REPORT_FILE, report)
    return report


def _evaluation_inputs(loaded, task: str, facts: dict, label_ids: torch.Tensor,
                       max_examples: int) -> tuple[ParityInputs, list[str]]:
    """The task's test split (first `max_examples`) as model inputs, and its target strings."""
    from hyperexport.data.collate import collate
    from hyperexport.training.task_data import load_task_data

    examples = load_task_data(loaded.recipe, splits=("train", "test"))[task].test[:max_examples]
    batch = collate(loaded.tokenizer, examples, {task: 0}, facts["max_source_length"], facts["max_new_tokens"])
    inputs = ParityInputs(batch["input_ids"], batch["attention_mask"],
                          loaded.model.backbone._shift_right(batch["labels"]), label_ids, facts["max_new_tokens"])
    return inputs, [e.target for e in examples]


def _random_inputs(loaded, facts: dict, label_ids: torch.Tensor) -> ParityInputs:
    generator = torch.Generator().manual_seed(0)
    vocab = len(loaded.tokenizer)
    input_ids = torch.randint(3, vocab, RANDOM_BATCH, generator=generator)
    input_ids[:, -1] = loaded.tokenizer.eos_token_id
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, RANDOM_BATCH[1] // 2:] = 0  # one padded row
    decoder_ids = torch.randint(3, vocab, (RANDOM_BATCH[0], 3), generator=generator)
    return ParityInputs(input_ids, attention_mask, decoder_ids, label_ids, facts["max_new_tokens"])


def _compare(outputs: dict, input_set: str) -> list[dict]:
    reference = outputs[REFERENCE][input_set]
    rows = []
    for runner, by_set in outputs.items():
        if runner == REFERENCE:
            continue
        for name, value in by_set[input_set].items():
            expected = reference[name]
            finite = bool(np.isfinite(value).all() and np.isfinite(expected).all())
            if name == "tokens":
                width = max(value.shape[1], expected.shape[1])
                value, expected = (np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in (value, expected))
            diff = float(np.abs(value.astype(np.float64) - expected).max()) if value.shape == expected.shape else float("inf")
            rows.append({"inputs": input_set, "runner": runner, "output": name, "max_abs_diff": diff,
                         "tolerance": TOLERANCES[name], "finite": finite,
                         "passed": finite and diff <= TOLERANCES[name]})
    return rows


def _metric_parity(outputs: dict, targets: list[str], loaded, task: str, facts: dict) -> list[dict]:
    """The task metric of each head's predictions per runner; each must equal the reference's."""
    from hyperexport.tasks.metrics import compute_metrics
    from hyperexport.training.task_data import task_spec

    spec = task_spec(next(t for t in loaded.recipe.tasks if t.name == task))
    rows = []
    for head, predict in (("classify", lambda o: [facts["labels"][i] for i in o["scores"].argmax(1)]),
                          ("generate", lambda o: [t.strip() for t in loaded.tokenizer.batch_decode(o["tokens"], skip_special_tokens=True)])):
        values = {runner: compute_metrics(spec, predict(o), targets) for runner, o in outputs.items()
                  if ("scores" if head == "classify" else "tokens") in o}
        others = [v for r, v in values.items() if r != REFERENCE]
        rows.append({"head": head, "values": values, "passed": all(v == values[REFERENCE] for v in others)})
    return rows
