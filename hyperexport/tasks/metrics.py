"""Evaluation metrics with the reference's post-processing rules (method §8), all scaled by 100.

Predictions and targets are stripped, then parsed per the task's `postprocess`: "int" (qqp, cola,
mrpc) and "float" (stsb) turn a parse failure into -1 / -1.0; "string" compares raw strings.
"""

import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from statistics import fmean
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hyperexport.tasks.registry import TaskSpec

INVALID_INT = -1
INVALID_FLOAT = -1.0


def accuracy(predictions: Sequence, targets: Sequence) -> float:
    """Exact match of processed values."""
    return 100.0 * fmean(float(p == t) for p, t in zip(predictions, targets, strict=True))


def f1_with_invalid(predictions: Sequence, targets: Sequence) -> float:
    """Binary F1 (positive class 1); a prediction that is neither 0 nor 1 becomes 1 - target."""
    flipped = [p if p in (0, 1) else 1 - t for p, t in zip(predictions, targets, strict=True)]
    true_pos = sum(p == 1 and t == 1 for p, t in zip(flipped, targets))
    false_pos = sum(p == 1 and t != 1 for p, t in zip(flipped, targets))
    false_neg = sum(p != 1 and t == 1 for p, t in zip(flipped, targets))
    denominator = 2 * true_pos + false_pos + false_neg
    return 100.0 * 2 * true_pos / denominator if denominator else 0.0


def matthews_corrcoef(predictions: Sequence, targets: Sequence) -> float:
    """Multi-class Matthews correlation (every distinct value is a class, -1 included); 0 if undefined."""
    pairs = list(zip(targets, predictions, strict=True))
    total = len(pairs)
    correct = sum(t == p for t, p in pairs)
    true_counts = Counter(targets)
    pred_counts = Counter(predictions)
    classes = set(true_counts) | set(pred_counts)
    cross = sum(true_counts[c] * pred_counts[c] for c in classes)
    true_sq = sum(count**2 for count in true_counts.values())
    pred_sq = sum(count**2 for count in pred_counts.values())
    denominator = math.sqrt((total**2 - pred_sq) * (total**2 - true_sq))
    return 100.0 * (correct * total - cross) / denominator if denominator else 0.0


def pearson(predictions: Sequence, targets: Sequence) -> float:
    """Pearson correlation; NaN (e.g. a constant input) becomes 0."""
    import scipy.stats  # heavy (about a second); only regression tasks need it

    return _correlation(scipy.stats.pearsonr, predictions, targets)


def spearman(predictions: Sequence, targets: Sequence) -> float:
    """Spearman rank correlation; NaN (e.g. a constant input) becomes 0."""
    import scipy.stats

    return _correlation(scipy.stats.spearmanr, predictions, targets)


def _correlation(statistic: Callable, predictions: Sequence, targets: Sequence) -> float:
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    if len(targets) < 2:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input before returning NaN
        value = float(statistic(targets, predictions)[0])
    return 0.0 if math.isnan(value) else 100.0 * value


METRICS: Mapping[str, Callable[[Sequence, Sequence], float]] = {
    "accuracy": accuracy,
    "f1": f1_with_invalid,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}
REGRESSION_METRICS = ("pearson", "spearman")


def postprocess(kind: str, text: str) -> str | int | float:
    """Strip, then parse as `kind` ("string" | "int" | "float"); a parse failure gives -1 / -1.0."""
    text = text.strip()
    if kind == "string":
        return text
    parse, invalid = (int, INVALID_INT) if kind == "int" else (float, INVALID_FLOAT)
    try:
        return parse(text)
    except ValueError:
        return invalid


def compute_metrics(
    task: "TaskSpec", predictions: Sequence[str], targets: Sequence[str]
) -> dict[str, float]:
    """The task's metrics (x100) of decoded predictions against decoded targets."""
    if len(predictions) != len(targets) or not targets:
        raise ValueError(f"need as many predictions as targets, got {len(predictions)} and {len(targets)}")
    processed_predictions = [postprocess(task.postprocess, text) for text in predictions]
    processed_targets = [postprocess(task.postprocess, text) for text in targets]
    return {name: METRICS[name](processed_predictions, processed_targets) for name in task.metrics}


def majority_baseline(
    task: "TaskSpec", train_targets: Sequence[str], eval_targets: Sequence[str]
) -> dict[str, float]:
    """Metrics of always predicting the most frequent train target (regression: the rounded mean)."""
    if not train_targets:
        raise ValueError("majority baseline needs at least one train target")
    if task.is_regression:
        constant = str(round(fmean(float(target) for target in train_targets), 1))
    else:
        constant = Counter(target.strip() for target in train_targets).most_common(1)[0][0]
    return compute_metrics(task, [constant] * len(eval_targets), eval_targets)


def average_metric(results: Mapping[str, Mapping[str, float]]) -> float:
    """Mean of every metric value of every task (method §8: 11 values for GLUE), not of task means."""
    values = [value for task_metrics in results.values() for value in task_metrics.values()]
    if not values:
        raise ValueError("no metric values to average")
    return fmean(values)
