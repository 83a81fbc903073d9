import io
import math
from collections import Counter

import pytest
import torch

from hyperexport.data.sampler import MultiTaskBatchSampler, task_probabilities
from hyperexport.errors import UserError

GLUE_TRAIN_SIZES = {  # PAPER 3.2
    "rte": 2_490, "mrpc": 3_668, "stsb": 5_749, "cola": 8_551,
    "sst2": 67_349, "qnli": 104_743, "qqp": 363_846, "mnli": 392_702,
}
PAPER_GLUE_PROBABILITIES = {  # PAPER 4, T = 10
    "rte": 0.096, "mrpc": 0.100, "stsb": 0.105, "cola": 0.109,
    "sst2": 0.134, "qnli": 0.140, "qqp": 0.158, "mnli": 0.159,
}


def test_glue_probabilities_match_the_paper():
    probabilities = task_probabilities(GLUE_TRAIN_SIZES, temperature=10.0)
    assert sum(probabilities.values()) == pytest.approx(1.0)
    for task, expected in PAPER_GLUE_PROBABILITIES.items():
        assert probabilities[task] == pytest.approx(expected, abs=1e-3), task


def test_temperature_one_is_proportional():
    assert task_probabilities({"a": 1, "b": 3}, temperature=1.0) == pytest.approx({"a": 0.25, "b": 0.75})


def test_bad_sizes_and_temperature_are_user_errors():
    with pytest.raises(UserError, match="temperature"):
        task_probabilities({"a": 1}, temperature=0)
    with pytest.raises(UserError, match="at least one example"):
        task_probabilities({"a": 0, "b": 4}, temperature=10)


def test_task_frequencies_follow_the_formula():
    sizes = {"small": 100, "medium": 2_000, "large": 50_000}
    sampler = MultiTaskBatchSampler(sizes, batch_size=1, temperature=2.0, seed=0)
    draws = 20_000
    counts = Counter(sampler.next_batch()[0][0] for _ in range(draws))
    for task, probability in task_probabilities(sizes, 2.0).items():
        bound = 5 * math.sqrt(draws * probability * (1 - probability))  # 5 binomial sd
        assert abs(counts[task] - draws * probability) < bound, task


def test_batches_are_single_task_with_indices_in_range():
    sizes = {"a": 7, "b": 30}
    sampler = MultiTaskBatchSampler(sizes, batch_size=16, seed=1)
    for _ in range(50):
        batch = sampler.next_batch()
        assert len(batch) == 16 and len({task for task, _ in batch}) == 1
        assert all(0 <= index < sizes[task] for task, index in batch)


def test_mixed_batches_draw_a_task_per_example():
    sampler = MultiTaskBatchSampler({"a": 10, "b": 10, "c": 10}, 64, seed=0, mixed_task_batches=True)
    batch = sampler.next_batch()
    assert len(batch) == 64 and len({task for task, _ in batch}) == 3


def test_resumed_sampler_continues_bit_identically():
    sizes = {"a": 100, "b": 300, "c": 5}
    sampler = MultiTaskBatchSampler(sizes, batch_size=8, seed=3)
    for _ in range(25):
        sampler.next_batch()
    buffer = io.BytesIO()
    torch.save(sampler.state_dict(), buffer)
    continued = [sampler.next_batch() for _ in range(40)]

    resumed = MultiTaskBatchSampler(sizes, batch_size=8, seed=3)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer))
    assert resumed.batches_drawn == 25
    assert [resumed.next_batch() for _ in range(40)] == continued


def test_fresh_samplers_with_other_seeds_differ():
    first = MultiTaskBatchSampler({"a": 100, "b": 100}, 8, seed=0)
    second = MultiTaskBatchSampler({"a": 100, "b": 100}, 8, seed=1)
    assert [first.next_batch() for _ in range(5)] != [second.next_batch() for _ in range(5)]


def test_loading_state_of_other_settings_is_refused():
    state = MultiTaskBatchSampler({"a": 10, "b": 20}, 4).state_dict()
    with pytest.raises(UserError, match="different task sizes"):
        MultiTaskBatchSampler({"a": 10, "b": 21}, 4).load_state_dict(state)
