import math

import pytest

from hyperexport.tasks.metrics import (
    average_metric,
    compute_metrics,
    majority_baseline,
    matthews_corrcoef,
    postprocess,
)
from hyperexport.tasks.registry import get_task


def test_postprocess_strips_and_maps_failures_to_minus_one():
    assert postprocess("string", " 1 ") == "1"
    assert postprocess("int", " 1\n") == 1
    assert postprocess("int", "yes") == -1 and postprocess("int", "") == -1
    assert postprocess("int", "1.0") == -1
    assert postprocess("float", "3.8") == 3.8 and postprocess("float", "x") == -1.0


def test_mrpc_f1_counts_invalid_outputs_as_wrong():
    predictions = ["1", " 0 ", "", "yes", "2", "0"]
    targets = ["1", "0", "1", "0", "1", "0"]
    # valid matches at 0, 1, 5 -> accuracy 3/6. Invalid become 1 - target: [1, 0, 0, 1, 0, 0]
    # TP = 1 (0), FP = 1 (3), FN = 2 (2, 4) -> F1 = 2 / (2 + 1 + 2)
    result = compute_metrics(get_task("mrpc"), predictions, targets)
    assert list(result) == ["f1", "accuracy"]
    assert result["accuracy"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(40.0)


def test_f1_without_positives_is_zero():
    assert compute_metrics(get_task("qqp"), ["0", "0"], ["0", "0"])["f1"] == 0.0


def test_accuracy_compares_raw_strings_for_string_tasks():
    result = compute_metrics(get_task("rte"), ["0", " 1", "yes", "00"], ["0", "1", "1", "0"])
    assert result == {"accuracy": pytest.approx(50.0)}


def test_mcc_binary_matches_the_two_by_two_formula():
    predictions, targets = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    tp, fp, tn, fn = 2, 1, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corrcoef(predictions, targets) == pytest.approx(100 * expected)


def test_cola_mcc_treats_invalid_output_as_a_third_class():
    result = compute_metrics(get_task("cola"), ["1", "0", "yes", "1"], ["1", "0", "0", "1"])
    # classes {1, 0, -1}: n = 4, correct = 3, true counts (2, 2), predicted counts (2, 1, 1)
    numerator = 3 * 4 - (2 * 2 + 2 * 1)
    denominator = math.sqrt((16 - (4 + 1 + 1)) * (16 - (4 + 4)))
    assert result == {"mcc": pytest.approx(100 * numerator / denominator)}
    assert result["mcc"] < 100  # mapping "yes" to 0 would have been perfect


def test_mcc_is_zero_when_undefined():
    assert compute_metrics(get_task("cola"), ["1", "1", "1"], ["0", "1", "0"]) == {"mcc": 0.0}


def test_stsb_correlations_with_an_invalid_prediction():
    predictions, targets = ["3.8", "1.0", "abc", "5"], ["4.0", "1.2", "2.0", "4.8"]
    x, y = [3.8, 1.0, -1.0, 5.0], [4.0, 1.2, 2.0, 4.8]
    mean_x, mean_y = sum(x) / 4, sum(y) / 4
    covariance = sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y))
    pearson = covariance / math.sqrt(
        sum((a - mean_x) ** 2 for a in x) * sum((b - mean_y) ** 2 for b in y)
    )
    # ranks x: [3, 2, 1, 4], y: [3, 1, 2, 4] -> sum d^2 = 2 -> 1 - 6 * 2 / (4 * 15)
    result = compute_metrics(get_task("stsb"), predictions, targets)
    assert result["pearson"] == pytest.approx(100 * pearson)
    assert result["spearman"] == pytest.approx(80.0)


def test_constant_regression_predictions_score_zero_not_nan():
    result = compute_metrics(get_task("stsb"), ["2.0", "2.0", "2.0"], ["1.0", "3.0", "4.2"])
    assert result == {"pearson": 0.0, "spearman": 0.0}


def test_compute_metrics_refuses_length_mismatch():
    with pytest.raises(ValueError):
        compute_metrics(get_task("rte"), ["0"], ["0", "1"])


def test_majority_baseline():
    assert majority_baseline(get_task("rte"), ["0", "1", "1"], ["1", "0", "1", "1"]) == {
        "accuracy": pytest.approx(75.0)
    }
    mrpc = majority_baseline(get_task("mrpc"), ["1", "1", "0"], ["1", "0"])
    assert mrpc == {"f1": pytest.approx(200 / 3), "accuracy": pytest.approx(50.0)}
    stsb = majority_baseline(get_task("stsb"), ["1.0", "2.0", "4.0"], ["1.2", "3.4", "0.2"])
    assert stsb == {"pearson": 0.0, "spearman": 0.0}


def test_average_is_over_every_metric_value_not_task_means():
    results = {"mrpc": {"f1": 40.0, "accuracy": 50.0}, "rte": {"accuracy": 90.0}}
    assert average_metric(results) == pytest.approx(60.0)  # task means would give 67.5
