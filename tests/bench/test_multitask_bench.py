"""`bench --multitask`: every figure of the multi-task comparison present and derived from the measured rows, on
a tiny shape with few rounds. Speed itself is not asserted (that belongs to the benchmark's own runs)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import TINY_RECIPE
from hyperexport.bench.multitask import slowdowns
from hyperexport_cli.main import app

runner = CliRunner()


def test_bench_multitask_reports_same_task_mixed_disk_and_memory():
    result = runner.invoke(app, ["bench", "--task", "rte", "--backbone", "t5-test", "--recipe", str(TINY_RECIPE),
                                 "--multitask", "3", "--batch", "1,2", "--seq", "6", "--rounds", "1", "--threads", "1",
                                 "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tasks"] == ["rte", "rte_2", "rte_3"] and report["source"] == "random t5-test"
    variants = {f"{kind}_{p}" for kind in ("single", "multitask") for p in ("fp32", "int8")}
    assert {(r["head"], r["batch"], r["variant"]) for r in report["same_task"]} == {
        (h, b, v) for h in ("classify", "generate") for b in (1, 2) for v in variants}
    assert report["slowdown"] == slowdowns(report["same_task"]) and set(report["slowdown"]) == {"fp32", "int8"}
    for mixed in report["mixed"].values():
        p50 = mixed["p50_ms"]
        mixed_p50 = p50["multitask_mixed_batch"]
        assert mixed["throughput_vs_single_batch"] == pytest.approx(p50["single_same_task_batch"] / mixed_p50)
        assert mixed["throughput_vs_single_calls"] == pytest.approx(p50["single_calls_of_1"] / mixed_p50)
    disk = report["disk_mb"]
    assert disk["ratio_fp32"] == pytest.approx(disk["multitask_fp32"] / disk["single_fp32"]) and disk["ratio_fp32"] > 1
    assert disk["3_single_fp32"] == pytest.approx(3 * disk["single_fp32"])
    memory = report["resident_mb"]
    assert memory["single_fp32"] > 0 and memory["3_single_fp32"] == pytest.approx(3 * memory["single_fp32"])
    assert report["goals"]["disk"] == pytest.approx(1 + 0.0075 * 3)


def test_bench_multitask_needs_two_tasks():
    result = runner.invoke(app, ["bench", "--task", "rte", "--backbone", "t5-test", "--recipe", str(TINY_RECIPE),
                                 "--multitask", "1"])
    assert result.exit_code == 2 and "--multitask 1: compare at least 2 tasks" in result.stderr
