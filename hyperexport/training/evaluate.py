"""Generation-based evaluation (method §8): greedy decoding with a task-specific length, the
paper's post-processing and metrics, and the majority-class baseline on the same split."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from hyperexport.contracts.run import RunFolder
from hyperexport.options import DEFAULT_SPLIT, Split
from hyperexport.runtime.heads import decoded_texts
from hyperexport.tasks.metrics import average_metric, compute_metrics, majority_baseline
from hyperexport.tasks.registry import max_target_tokens

if TYPE_CHECKING:
    import torch

    from hyperexport.data.collate import Example


def predict_texts(model, tokenizer, examples: list[Example], task_id: int, max_new_tokens: int,
                  batch_size: int, max_source_length: int, device: torch.device) -> list[str]:
    """Greedy generations for examples of one task, decoded without special tokens."""
    import torch

    from hyperexport.data.collate import collate

    predictions: list[str] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = collate(tokenizer, chunk, {chunk[0].task: task_id}, max_source_length, max_new_tokens)
        with torch.no_grad():
            out = model.generate(
                task_ids=batch["task_ids"].to(device),
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                max_new_tokens=max_new_tokens,
                num_beams=1,
                do_sample=False,
            )
        predictions += decoded_texts(tokenizer, out)
    return predictions


def evaluate_tasks(model, tokenizer, task_data: Mapping, split: str, batch_size: int,
                   max_source_length: int, device: torch.device, with_baseline: bool = False) -> dict:
    """{"tasks": {task: {"metrics": {...}[, "baseline": {...}]}}, "average": x} on `split`."""
    was_training = model.training
    model.eval()
    results: dict[str, dict] = {}
    for name, data in task_data.items():
        examples = data.split(split)
        if not examples:
            continue
        predictions = predict_texts(model, tokenizer, examples, model.task_id(name),
                                    max_target_tokens(data.spec, tokenizer), batch_size, max_source_length, device)
        targets = [example.target for example in examples]
        results[name] = {"metrics": compute_metrics(data.spec, predictions, targets)}
        if with_baseline:
            train_targets = [example.target for example in data.train] or targets
            results[name]["baseline"] = majority_baseline(data.spec, train_targets, targets)
    model.train(was_training)
    average = average_metric({name: r["metrics"] for name, r in results.items()}) if results else float("nan")
    return {"tasks": results, "average": average}


def evaluate_run(run: str | Path | None = None, *, tasks: list[str] | None = None, split: Split = DEFAULT_SPLIT,
                 batch_size: int | None = None) -> dict:
    """Metrics of a run's trained model on `split` for some or all of its tasks, with baselines (the run and
    the task names are checked before the model is loaded)."""
    folder = RunFolder.resolve(run)
    folder.require_tasks(tasks or [])
    import torch

    from hyperexport.model.trained import load_run
    from hyperexport.training.task_data import load_task_data

    loaded = load_run(folder.path)
    data = {name: d for name, d in load_task_data(loaded.recipe).items() if not tasks or name in tasks}
    result = evaluate_tasks(loaded.model, loaded.tokenizer, data, split,
                            batch_size or loaded.recipe.train.eval_batch_size,
                            loaded.recipe.data.max_source_length, torch.device("cpu"), with_baseline=True)
    return {"run": str(loaded.path), "split": split, **result}
