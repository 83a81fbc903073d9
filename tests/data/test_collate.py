import pytest
import torch
from transformers import ByT5Tokenizer

from hyperexport.data.collate import Example, collate, make_examples
from hyperexport.errors import UserError
from hyperexport.tasks.registry import get_task

EOS = 1
BYTE_OFFSET = 3  # ByT5: id = byte + 3


@pytest.fixture(scope="module")
def tokenizer():
    return ByT5Tokenizer()


def byte_ids(text):
    return [byte + BYTE_OFFSET for byte in text.encode()]


def test_make_examples_formats_source_and_target():
    raw = [{"sentence1": "a", "sentence2": "b", "label": 1}]
    assert make_examples(get_task("rte"), raw) == [Example("rte", "sentence1: a sentence2: b", "1")]


def test_collate_pads_sources_and_masks_label_padding(tokenizer):
    examples = [Example("rte", "ab", "1"), Example("stsb", "abcd", "3.8")]
    batch = collate(tokenizer, examples, {"rte": 0, "stsb": 1}, max_source_length=16, max_target_length=8)
    assert batch["input_ids"].tolist() == [byte_ids("ab") + [EOS, 0, 0], byte_ids("abcd") + [EOS]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [byte_ids("1") + [EOS, -100, -100], byte_ids("3.8") + [EOS]]
    assert batch["task_ids"].tolist() == [0, 1]
    assert all(tensor.dtype == torch.long for tensor in batch.values())


def test_collate_truncates_and_keeps_eos(tokenizer):
    batch = collate(tokenizer, [Example("rte", "abcdefgh", "1")], {"rte": 0}, 4, 8)
    assert batch["input_ids"].tolist() == [byte_ids("abc") + [EOS]]


def test_collate_refuses_tasks_without_an_id(tokenizer):
    with pytest.raises(UserError, match="mrpc"):
        collate(tokenizer, [Example("mrpc", "a", "1")], {"rte": 0}, 8, 8)
