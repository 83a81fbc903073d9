"""The fairseq label-smoothed loss against hand-computed references."""

import pytest
import torch
import torch.nn.functional as F

from hyperexport.training.loss import IGNORE_INDEX, label_smoothed_nll_loss


@pytest.fixture
def logits_and_labels():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 7, generator=generator)
    labels = torch.tensor([[1, 4, IGNORE_INDEX], [6, IGNORE_INDEX, IGNORE_INDEX]])
    return logits, labels


def test_without_smoothing_sum_is_cross_entropy_summed_over_tokens(logits_and_labels):
    logits, labels = logits_and_labels
    expected = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), reduction="sum", ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(label_smoothed_nll_loss(logits, labels, 0.0, "sum"), expected)


def test_mean_divides_by_target_tokens(logits_and_labels):
    logits, labels = logits_and_labels
    total = label_smoothed_nll_loss(logits, labels, 0.1, "sum")
    torch.testing.assert_close(label_smoothed_nll_loss(logits, labels, 0.1, "mean"), total / 3)


def test_smoothing_matches_the_fairseq_formula_by_hand(logits_and_labels):
    logits, labels = logits_and_labels
    lprobs, eps, expected = F.log_softmax(logits, -1), 0.1, 0.0
    for b, t in [(0, 0), (0, 1), (1, 0)]:
        nll, smooth = -lprobs[b, t, labels[b, t]], -lprobs[b, t].sum()
        expected += (1 - eps) * nll + eps / 7 * smooth
    torch.testing.assert_close(label_smoothed_nll_loss(logits, labels, eps, "sum"), expected)
