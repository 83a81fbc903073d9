from collections import Counter

import pytest

from hyperexport.data import demo
from hyperexport.data.demo import (
    COLOURS,
    DEMO_SPLIT_SIZES,
    NEGATIVE,
    POSITIVE,
    demo_examples,
    example_text,
)
from hyperexport.errors import UserError
from hyperexport.tasks.registry import get_task

DEMO_TASKS = ("rte", "sst2", "mrpc")


@pytest.fixture(scope="module", params=DEMO_TASKS)
def demo_splits(request):
    name = request.param
    sizes = DEMO_SPLIT_SIZES.items()
    return name, {split: demo_examples(name, split, size, seed=5) for split, size in sizes}


def test_demo_examples_fit_the_real_task(demo_splits):
    name, splits = demo_splits
    task = get_task(name)
    for examples in splits.values():
        half = len(examples) // 2
        assert Counter(example["label"] for example in examples) == {0: half, 1: half}
        for example in examples:
            assert task.format_target(example) in ("0", "1")
            assert all(len(example[field]) <= 50 for field in task.source_fields)
            assert task.format_source(example).isascii()


def test_demo_texts_are_unique_and_splits_disjoint(demo_splits):
    _, splits = demo_splits
    train = [example_text(example) for example in splits["train"]]
    validation = [example_text(example) for example in splits["validation"]]
    assert len(set(train)) == len(train) and len(set(validation)) == len(validation)
    assert not set(train) & set(validation)


def test_demo_is_deterministic_by_seed():
    assert demo_examples("mrpc", "train", 50, seed=1) == demo_examples("mrpc", "train", 50, seed=1)
    assert demo_examples("mrpc", "train", 50, seed=1) != demo_examples("mrpc", "train", 50, seed=2)


def test_sst2_label_follows_adjective_polarity():
    for example in demo_examples("sst2", "train", 200, seed=0):
        words = set(example["sentence"].split())
        polarity = POSITIVE if example["label"] == 1 else NEGATIVE
        opposite = NEGATIVE if example["label"] == 1 else POSITIVE
        assert words & set(polarity) and not words & set(opposite)


def negated(text: str) -> bool:
    return bool(set(text.split()) & {"not", "never", "no"})


def test_rte_label_is_whether_sentence2_denies_what_sentence1_says():
    for example in demo_examples("rte", "train", 300, seed=0):
        first, second = example["sentence1"], example["sentence2"]
        animal = first.split()[2]
        stated = second.removeprefix(f"the {animal} ")
        for cue in ("no longer ", "never ", "not "):
            stated = stated.replace(cue, "")
        assert f" {stated.removeprefix('is ')} " in f" {first} ", example  # true of sentence1, negation aside
        assert negated(second) == (example["label"] == 1), example


def test_rte_classes_share_their_content_words():
    """Only the negation tells the rte classes apart: attributes appear equally in both."""
    examples = demo_examples("rte", "train", 2000, seed=0)
    by_label = [Counter(), Counter()]
    for example in examples:
        by_label[example["label"]].update(example["sentence2"].split())
    for colour in COLOURS:
        assert 0.3 < by_label[0][colour] / (by_label[0][colour] + by_label[1][colour]) < 0.7


def content_words(text):
    return set(text.split()) - {"the", "to", "from", "got", "went", "gave", "handed", "passed", "never"}


def test_mrpc_pairs_share_their_facts_and_the_label_is_whether_sentence2_denies_them():
    for example in demo_examples("mrpc", "train", 300, seed=0):
        assert example["sentence1"] != example["sentence2"]
        assert content_words(example["sentence1"]) == content_words(example["sentence2"])
        assert negated(example["sentence2"]) == (example["label"] == 0), example


def test_rte_and_mrpc_map_the_same_cue_to_opposite_labels():
    """The two tasks share a template and a cue, so only the task embedding separates them."""
    rte, mrpc = get_task("rte"), get_task("mrpc")
    assert rte.template == mrpc.template
    rte_negated = {e["label"] for e in demo_examples("rte", "train", 100, seed=0) if negated(e["sentence2"])}
    mrpc_negated = {e["label"] for e in demo_examples("mrpc", "train", 100, seed=0) if negated(e["sentence2"])}
    assert (rte_negated, mrpc_negated) == ({1}, {0})


def test_demo_refuses_unknown_task_and_split():
    with pytest.raises(UserError, match="demo tasks are rte, sst2, mrpc"):
        demo_examples("cola", "train", 10, seed=0)
    with pytest.raises(UserError, match="no split 'test'"):
        demo_examples("rte", "test", 10, seed=0)


def test_demo_stops_when_distinct_texts_run_out(monkeypatch):
    """A generator with two possible texts cannot fill four examples; the search must end."""
    monkeypatch.setattr(demo, "MAX_DRAWS_PER_EXAMPLE", 50)
    two_texts = lambda rng, label: {"sentence": f"only {label}", "label": label}  # noqa: E731
    monkeypatch.setitem(demo.DEMO_GENERATORS, "sst2", two_texts)
    with pytest.raises(UserError, match="ran out of distinct"):
        demo_examples("sst2", "train", 4, seed=0)
