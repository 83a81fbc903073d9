import pytest
from transformers import ByT5Tokenizer

from hyperexport.errors import UserError
from hyperexport.tasks.metrics import METRICS
from hyperexport.tasks.registry import (
    GLUE_TASKS,
    STSB_LABELS,
    TASKS,
    custom_task,
    get_task,
    max_target_tokens,
)

PAPER_TASKS = (
    "cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "superglue-boolq",
    "superglue-cb", "superglue-rte", "scitail", "paws", "imdb", "yelp_polarity", "trec",
)


def test_registry_holds_the_paper_tasks():
    assert set(TASKS) == set(PAPER_TASKS)
    assert set(GLUE_TASKS) <= set(TASKS) and len(GLUE_TASKS) == 8
    assert all(TASKS[name].hf_path == "nyu-mll/glue" for name in GLUE_TASKS)


@pytest.mark.parametrize(
    ("name", "example", "source"),
    [
        ("rte", {"sentence1": "A b.", "sentence2": "C d."}, "sentence1: A b. sentence2: C d."),
        ("cola", {"sentence": "Hi there."}, "sentence: Hi there."),
        ("mnli", {"premise": "P.", "hypothesis": "H."}, "premise: P. hypothesis H."),
        ("qqp", {"question1": "Q1?", "question2": "Q2?"}, "question1: Q1? question2: Q2?"),
        ("imdb", {"text": "A film."}, "A film."),
        ("yelp_polarity", {"text": "Food."}, "sentence: Food."),
        ("superglue-cb", {"premise": "P", "hypothesis": "H"}, "premise: P hypothesis: H"),
    ],
)
def test_format_source_fills_the_paper_template_without_prefix(name, example, source):
    assert get_task(name).format_source({**example, "label": 0}) == source


def test_format_source_names_missing_fields():
    with pytest.raises(UserError, match="sentence2"):
        get_task("rte").format_source({"sentence1": "x", "label": 0})


def test_format_target_is_str_of_label():
    assert get_task("mnli").format_target({"label": 2}) == "2"
    assert get_task("superglue-boolq").format_target({"label": True}) == "1"
    assert get_task("trec").format_target({"coarse_label": 5}) == "5"


def test_string_labels_go_through_label_map():
    assert get_task("scitail").format_target({"gold_label": "neutral"}) == "1"
    assert get_task("rte").format_target({"label": "not_entailment"}) == "1"
    assert get_task("mnli").format_target({"label": "contradiction"}) == "2"


def test_labels_outside_the_task_are_refused():
    with pytest.raises(UserError, match="not one of"):
        get_task("rte").format_target({"label": 2})
    with pytest.raises(UserError, match="label field 'coarse_label'"):
        get_task("trec").format_target({"label": 1})


def test_stsb_target_rounds_to_one_decimal_not_the_grid():
    stsb = get_task("stsb")
    assert stsb.format_target({"label": 3.75}) == "3.8"
    assert stsb.format_target({"label": 3.7}) == "3.7"  # PAPER 7.6: off the 0.2 grid
    assert stsb.format_target({"label": 4}) == "4.0"
    assert STSB_LABELS[:3] == ("0.0", "0.2", "0.4") and STSB_LABELS[-1] == "5.0"
    assert len(STSB_LABELS) == 26 and stsb.is_regression and stsb.postprocess == "float"
    with pytest.raises(UserError, match="not a number"):
        stsb.format_target({"label": "high"})


def test_metrics_and_postprocessing_follow_the_paper():
    assert get_task("cola").metrics == ("mcc",)
    assert get_task("mrpc").metrics == get_task("qqp").metrics == ("f1", "accuracy")
    assert get_task("stsb").metrics == ("pearson", "spearman")
    assert {TASKS[name].postprocess for name in ("qqp", "cola", "mrpc")} == {"int"}
    others = set(TASKS) - {"qqp", "cola", "mrpc", "stsb"}
    assert {TASKS[name].postprocess for name in others} == {"string"}
    assert all(metric in METRICS for task in TASKS.values() for metric in task.metrics)


def test_split_policies_and_maps_follow_the_paper():
    small = {"cola", "wnli", "rte", "trec", "superglue-cb", "mrpc", "stsb", "imdb", "superglue-boolq"}
    large = {"yelp_polarity", "qqp", "qnli", "sst2"}
    assert {name for name, task in TASKS.items() if task.split_policy == "small"} == small
    assert {name for name, task in TASKS.items() if task.split_policy == "large"} == large
    mnli = get_task("mnli").split_map
    assert (mnli["validation"], mnli["test"]) == ("validation_mismatched", "validation_matched")
    assert get_task("rte").split_map["test"] == "validation"
    assert get_task("imdb").split_map["validation"] == "test"


def test_get_task_unknown_lists_known_tasks():
    with pytest.raises(UserError, match="unknown task 'xyz': known tasks are cola, .*custom task"):
        get_task("xyz")


def test_custom_task_classification_and_regression():
    task = custom_task("tickets", "ticket: {body}", ["bug", "feature"], "accuracy")
    assert task.postprocess == "string" and not task.is_regression
    assert task.format_source({"body": "it crashes"}) == "ticket: it crashes"
    assert task.format_target({"label": "bug"}) == "bug"
    scores = custom_task("score", "a: {a}", ["0.0", "1.0"], ["pearson", "spearman"], label_field="y")
    assert scores.postprocess == "float" and scores.is_regression
    assert scores.format_target({"a": "x", "y": 0.44}) == "0.4"


@pytest.mark.parametrize(
    ("template", "labels", "metric", "message"),
    [
        ("x: {x}", ["a"], "bleu", "metric bleu is unknown"),
        ("x: {x}", [], "accuracy", "labels are empty"),
        ("x: {}", ["a"], "accuracy", "named fields"),
        ("x: {x", ["a"], "accuracy", "malformed"),
        ("x: {x}", ["a", "b"], "f1", "f1 needs labels"),
    ],
)
def test_custom_task_refuses_bad_declarations(template, labels, metric, message):
    with pytest.raises(UserError, match=message):
        custom_task("mine", template, labels, metric)


def test_max_target_tokens_counts_eos():
    tokenizer = ByT5Tokenizer()
    assert max_target_tokens(get_task("rte"), tokenizer) == 2  # "0" + </s>
    assert max_target_tokens(get_task("stsb"), tokenizer) == 4  # "3.8" + </s>
