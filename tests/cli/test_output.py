"""The CLI's printers on the report shapes verify writes: a single-task report and a multi-task one."""

from __future__ import annotations

import pytest

from hyperexport_cli.output import parity_verdict, print_parity


def comparison(passed: bool, runner: str = "onnxruntime") -> dict:
    return {"inputs": "evaluation", "runner": runner, "output": "scores", "max_abs_diff": 2e-4 if not passed else 1e-6,
            "tolerance": 1e-4, "finite": True, "passed": passed}


def single(passed: bool, not_run: list | None = None) -> dict:
    return {"export": "exports/rte/onnx", "task": "rte", "reference": "torch_hypernet", "precision": "fp32",
            "comparisons": [comparison(passed)], "metrics": [], "not_run": not_run or [],
            "passed": passed and not not_run}


def multitask(task_passed: bool, mixed_passed: bool) -> dict:
    tasks = [{"task": name, "row": row, "run": "runs/demo", "comparisons": [comparison(ok)], "metrics": [],
              "passed": ok} for row, (name, ok) in enumerate([("rte", True), ("sst2", task_passed)])]
    mixed = {"rows": 4, "task_ids": [0, 1, 1, 0], "passed": mixed_passed,
             "comparisons": [{"task": "sst2", "output": "scores", "rows": 2, "max_abs_diff": 1e-6, "tolerance": 1e-5,
                              "finite": True, "passed": mixed_passed}]}
    return {"export": "exports/multitask/onnx", "reference": "torch_hypernet", "precision": "fp32", "tasks": tasks,
            "mixed_batch": mixed, "not_run": [], "passed": task_passed and mixed_passed}


@pytest.mark.parametrize("report, verdict", [
    (single(True), "parity passed"),
    (single(False), "parity FAILED"),
    (single(True, [{"runner": "onnxruntime", "reason": "bf16 graphs need a GPU"}]), "parity not run here"),
    (multitask(True, True), "parity passed"),
    (multitask(False, True), "parity FAILED"),  # one task out of tolerance
    (multitask(True, False), "parity FAILED"),  # the mixed batch differs from the single-task graphs
])
def test_the_verdict_names_pass_failure_and_not_run(report, verdict, capsys):
    assert parity_verdict(report).startswith(verdict)
    print_parity(report)  # the table and the verdict print for either shape
    assert verdict in capsys.readouterr().out
