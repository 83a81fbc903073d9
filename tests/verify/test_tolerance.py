"""verify's bound on fp32 logits and scores: 1e-4 plus 1e-5 of the largest finite reference value."""

from __future__ import annotations

import numpy as np
import pytest

from hyperexport.verify.compare import REFERENCE, TOLERANCES, compare, tolerance


def test_the_fp32_bound_grows_with_the_reference_and_ignores_minus_infinity():
    expected = np.array([[-40.0, -1.0, -np.inf]])  # a multi-task score row: -inf past the task's labels
    assert tolerance(TOLERANCES["fp32"], "scores", expected) == pytest.approx(1e-4 + 1e-5 * 40)
    assert tolerance(TOLERANCES["fp32"], "tokens", expected) == 0.0
    assert tolerance(TOLERANCES["int8"], "logits", expected) == TOLERANCES["int8"]["logits"]  # absolute only


@pytest.mark.parametrize("delta, passed", [(4.9e-4, True), (5.1e-4, False)])
def test_compare_applies_the_bound_to_each_runner(delta, passed):
    reference = np.array([[-40.0, -0.5]], dtype=np.float32)
    outputs = {REFERENCE: {"evaluation": {"scores": reference}},
               "onnxruntime": {"evaluation": {"scores": reference + np.float32(delta)}}}
    [row] = compare(outputs, "evaluation", {"onnxruntime": TOLERANCES["fp32"]})
    assert row["tolerance"] == pytest.approx(5e-4) and row["passed"] is passed
