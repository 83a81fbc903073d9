import json

import pytest
import torch

from hyperexport.data.demo import DEMO_SPLIT_SIZES
from hyperexport.data.splits import large_validation_size, seeded_permutation, task_split
from hyperexport.errors import UserError
from hyperexport.tasks.registry import custom_task, get_task


def texts(examples):
    return [json.dumps(example, sort_keys=True) for example in examples]


def test_small_policy_halves_the_validation_split():
    rte = get_task("rte")
    validation = task_split(rte, "demo", "validation", None, data_seed=42)
    test = task_split(rte, "demo", "test", None, data_seed=42)
    source = task_split(get_task("rte"), "demo", "train", None, data_seed=42)
    assert len(source) == DEMO_SPLIT_SIZES["train"]  # train is the full train split
    assert len(validation) == len(test) == DEMO_SPLIT_SIZES["validation"] // 2
    assert not set(texts(validation)) & set(texts(test))  # demo texts are unique per split


def test_small_policy_uses_the_reference_permutation(tmp_path):
    rows = [{"sentence1": f"s{i}", "sentence2": "t", "label": i % 2} for i in range(9)]
    write_jsonl(tmp_path / "validation.jsonl", rows)
    rte = get_task("rte")
    validation = task_split(rte, "jsonl", "validation", str(tmp_path), data_seed=7)
    test = task_split(rte, "jsonl", "test", str(tmp_path), data_seed=7)
    order = torch.randperm(9, generator=torch.Generator().manual_seed(7)).tolist()
    assert [row["sentence1"] for row in validation] == [f"s{i}" for i in order[:4]]
    assert [row["sentence1"] for row in test] == [f"s{i}" for i in order[4:]]  # nothing dropped


def test_splits_are_deterministic_and_depend_on_the_seed():
    rte = get_task("rte")
    first = task_split(rte, "demo", "validation", None, data_seed=1)
    assert first == task_split(rte, "demo", "validation", None, data_seed=1)
    assert first != task_split(rte, "demo", "validation", None, data_seed=2)


def test_large_policy_holds_out_validation_from_train():
    sst2 = get_task("sst2")
    train = task_split(sst2, "demo", "train", None)
    validation = task_split(sst2, "demo", "validation", None)
    test = task_split(sst2, "demo", "test", None)
    full = DEMO_SPLIT_SIZES["train"]
    assert len(validation) == large_validation_size(full) == full // 10
    assert len(train) == full - len(validation)
    assert len(test) == DEMO_SPLIT_SIZES["validation"]  # the mapped validation split, whole
    leaked = task_split(sst2, "demo", "train", None, validation_leak=True)
    assert len(leaked) == full
    assert sorted(texts(train) + texts(validation)) == sorted(texts(leaked))


def test_large_validation_size_is_the_paper_1000_for_real_tasks():
    assert large_validation_size(67_349) == 1000
    assert large_validation_size(2000) == 200


def test_direct_policy_uses_mapped_splits(tmp_path):
    task = custom_task("mine", "x: {x}", ["a", "b"], "accuracy")
    for split in ("train", "validation", "test"):
        write_jsonl(tmp_path / f"{split}.jsonl", [{"x": split, "label": "a"}])
    assert task_split(task, "jsonl", "test", str(tmp_path)) == [{"x": "test", "label": "a"}]


def test_max_examples_keeps_a_seeded_subset(tmp_path):
    task = custom_task("mine", "x: {x}", ["a"], "accuracy")
    write_jsonl(tmp_path / "train.jsonl", [{"x": i, "label": "a"} for i in range(20)])
    subset = task_split(task, "jsonl", "train", str(tmp_path), data_seed=3, max_examples=5)
    assert [row["x"] for row in subset] == seeded_permutation(20, 3)[:5]
    everything = task_split(task, "jsonl", "train", str(tmp_path), max_examples=50)
    assert len(everything) == 20


def test_bad_requests_are_user_errors():
    with pytest.raises(UserError, match="unknown split 'dev'"):
        task_split(get_task("rte"), "demo", "dev", None)
    with pytest.raises(UserError, match="max_examples"):
        task_split(get_task("rte"), "demo", "train", None, max_examples=0)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
