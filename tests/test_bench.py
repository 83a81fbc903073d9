"""`bench`: every variant measured at every batch size, ratios derived from the measured rows, bad input.
Timings themselves are not asserted (speed belongs to the benchmark, not to unit tests)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_RECIPE
from typer.testing import CliRunner

from hyperexport.bench.inference import HEADS, VARIANTS, bench, ratios
from hyperexport.bench.training import bench_training
from hyperexport_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from hyperexport.recipe.load import load_recipe
    from hyperexport.training.loop import train

    return train(load_recipe(TINY_RECIPE), output=tmp_path_factory.mktemp("bench") / "runs" / "tiny", progress_bar=False)


def test_bench_measures_every_variant_head_and_batch(tiny_run):
    report = bench(tiny_run, task="rte", batches=(1, 2), seq=8, rounds=2, threads=1, progress_bar=False)
    keys = {(r["head"], r["batch"], r["variant"]) for r in report["results"]}
    assert keys == {(h, b, v) for h in HEADS for b in (1, 2) for v in VARIANTS}
    for row in report["results"]:
        items = row["batch"] * (report["new_tokens"] if row["head"] == "generate" else 1)
        assert 0 < row["p50_ms"] <= row["p90_ms"]
        assert row["throughput"] == pytest.approx(items / (row["p50_ms"] / 1e3))
    p50 = {(r["head"], r["batch"], r["variant"]): r["p50_ms"] for r in report["results"]}
    slower_over_faster = {"ort_fp32_vs_torch_hypernet": ("torch_hypernet", "ort_fp32"),  # written out here, not
                          "ort_fp32_vs_plain_backbone": ("ort_plain_backbone", "ort_fp32"),  # taken from the module
                          "ort_int8_vs_ort_fp32": ("ort_fp32", "ort_int8")}
    assert set(report["ratios"]) == {*slower_over_faster, "classify_vs_generate"}
    for name, (slow, fast) in slower_over_faster.items():
        for head in HEADS:
            for batch in (1, 2):
                expected = p50[(head, batch, slow)] / p50[(head, batch, fast)]
                assert report["ratios"][name][head][str(batch)] == pytest.approx(expected, rel=1e-12)
    for batch in (1, 2):
        expected = p50[("generate", batch, "ort_fp32")] / p50[("classify", batch, "ort_fp32")]
        assert report["ratios"]["classify_vs_generate"][str(batch)] == pytest.approx(expected, rel=1e-12)
    sizes = report["sizes_mb"]
    assert all(sizes["ort_int8"][h] < sizes["ort_fp32"][h] for h in HEADS)  # really quantized
    assert sizes["torch_hypernet"] > sizes["torch_folded"]  # the hypernetwork is gone after folding
    assert report["source"] == str(tiny_run) and report["peak_rss_mb"] > 0


def test_ratios_are_p50_speed_ups():
    rows = [{"head": "classify", "batch": 1, "variant": v, "p50_ms": ms} for v, ms in
            (("torch_hypernet", 30.0), ("torch_folded", 20.0), ("ort_fp32", 10.0), ("ort_int8", 5.0),
             ("ort_plain_backbone", 9.0))]
    assert ratios(rows) == {"ort_fp32_vs_torch_hypernet": {"classify": {"1": 3.0}},
                            "ort_fp32_vs_plain_backbone": {"classify": {"1": 0.9}},
                            "ort_int8_vs_ort_fp32": {"classify": {"1": 2.0}}}


def test_bench_training_compares_the_hypernetwork_with_plain_adapters(tiny_run):
    report = bench_training(tiny_run, task="rte", batch=2, seq=8, rounds=2, threads=1, progress_bar=False)
    rows = report["training"]
    assert set(rows) == {"hyperformer++", "adapters"} and all(r["steps_per_s"] > 0 for r in rows.values())
    assert report["overhead"] == pytest.approx(rows["hyperformer++"]["p50_ms"] / rows["adapters"]["p50_ms"] - 1)


def test_bench_cli_json_with_a_random_backbone_shape(tmp_path):
    threads = torch.get_num_threads()
    result = runner.invoke(app, ["bench", "--task", "rte", "--backbone", "t5-test", "--recipe", str(TINY_RECIPE),
                                 "--batch", "1", "--seq", "6", "--rounds", "1", "--head", "classify", "--json"])
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == threads  # bench measured on every core, then gave the count back
    report = json.loads(result.stdout)
    assert report["source"] == "random t5-test" and report["backbone"] == "t5-test"
    assert set(report["ratios"]["ort_fp32_vs_torch_hypernet"]) == {"classify"}


@pytest.mark.parametrize("args, message", [
    (["--batch", "0,x"], "--batch '0,x' is not a comma-separated list of positive integers"),
    (["--backbone", "t5-huge"], "unknown backbone 't5-huge': use one of"),
    (["--head", "score"], "unknown head 'score': use classify or generate"),
    (["--task", "qqp", "--backbone", "t5-test"], "task 'qqp' is not in the recipe"),
    (["--train", "--rounds", "0", "--backbone", "t5-test"], "invalid value for '--rounds': input should be greater than or equal to 1"),
])
def test_bench_bad_input_is_one_line_and_exit_2(args, message):
    base = ["bench", "--recipe", str(TINY_RECIPE)]
    result = runner.invoke(app, base + (args if "--task" in args else ["--task", "rte", *args]))
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
