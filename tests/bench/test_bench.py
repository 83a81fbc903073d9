"""`bench`: every variant measured at every batch size, ratios derived from the measured rows, decode steps
against their bound, sizes, agreement, goals, the peers, bad input. Timings themselves are not asserted
(speed belongs to the benchmark, not to unit tests): these are smoke tests on tiny shapes and few rounds
that check the reports are well formed."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_RECIPE
from hyperexport.bench import peers
from hyperexport.bench.goals import TARGETS, goals
from hyperexport.bench.inference import HEADS, RATIOS, VARIANTS, bench, ratios
from hyperexport.bench.peer_worker import CT2_THREADS, HYPERNET, PLAIN, ct2_variant
from hyperexport.bench.training import bench_training
from hyperexport.bench.variants import GENERATE_ONLY, ORT_VARIANTS
from hyperexport_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tiny_rte):
    return tiny_rte.run  # only read: bench builds its variants in a temporary folder


def test_bench_measures_every_variant_head_and_batch(tiny_run):
    report = bench(tiny_run, task="rte", batches=(1, 2), seq=8, rounds=2, threads=1, progress_bar=False, memory=False)
    keys = {(r["head"], r["batch"], r["variant"]) for r in report["results"]}
    assert keys == {(h, b, v) for h in HEADS for b in (1, 2) for v in VARIANTS} | {
        ("generate", b, v) for b in (1, 2) for v in GENERATE_ONLY}
    for row in report["results"]:
        items = row["batch"] * (report["new_tokens"] if row["head"] == "generate" else 1)
        assert 0 < row["p50_ms"] <= row["p90_ms"]
        assert row["throughput"] == pytest.approx(items / (row["p50_ms"] / 1e3))
    p50 = {(r["head"], r["batch"], r["variant"]): r["p50_ms"] for r in report["results"]}
    slower_over_faster = {"ort_fp32_vs_torch_hypernet": ("torch_hypernet", "ort_fp32"),  # written out here, not
                          "ort_fp32_vs_plain_backbone": ("ort_plain_backbone", "ort_fp32"),  # taken from the module
                          "ort_int8_vs_ort_fp32": ("ort_fp32", "ort_int8")}
    assert set(slower_over_faster) <= set(report["ratios"]) and "classify_vs_generate" in report["ratios"]
    for name, (slow, fast) in slower_over_faster.items():
        for head in HEADS:
            for batch in (1, 2):
                expected = p50[(head, batch, slow)] / p50[(head, batch, fast)]
                assert report["ratios"][name][head][str(batch)] == pytest.approx(expected, rel=1e-12)
    for name, (slow, fast) in RATIOS.items():  # the generate-only ones: the one-graph loop, the kept past
        for batch in (1, 2):
            expected = p50[("generate", batch, slow)] / p50[("generate", batch, fast)]
            assert report["ratios"][name]["generate"][str(batch)] == pytest.approx(expected, rel=1e-12)
    for batch in (1, 2):
        expected = p50[("generate", batch, "ort_fp32")] / p50[("classify", batch, "ort_fp32")]
        assert report["ratios"]["classify_vs_generate"][str(batch)] == pytest.approx(expected, rel=1e-12)
    sizes = report["sizes_mb"]
    weights = report["export_sizes"]  # (the tiny model's files are mostly page-aligned padding)
    assert all(weights["ort_int8"][h]["weights_mb"] < weights["ort_fp32"][h]["weights_mb"] for h in HEADS)  # quantized
    assert sizes["torch_hypernet"] > sizes["torch_folded"]  # the hypernetwork is gone after folding
    assert report["source"] == str(tiny_run) and report["peak_rss_mb"] > 0
    assert all(report["settings"][v]["threads"] == 1 for v in VARIANTS)


def test_bench_reports_decode_steps_sizes_agreement_and_goals(tiny_run):
    report = bench(tiny_run, task="rte", batches=(1,), seq=8, rounds=2, threads=1, heads=("generate",),
                   progress_bar=False, memory=False)
    steps = {(r["variant"], r["batch"]): r for r in report["decode_steps"]}
    assert set(steps) == {(v, 1) for v in ORT_VARIANTS}
    for row in steps.values():
        assert row["vs_bound"] == pytest.approx(row["step_p50_ms"] / row["bound_ms"]) and row["step_bytes_mb"] > 0
    assert steps[("ort_int8", 1)]["step_bytes_mb"] < steps[("ort_fp32", 1)]["step_bytes_mb"]
    assert report["bandwidth_gb_s"]["threads"] > 0
    sizes = report["export_sizes"]["ort_fp32"]["generate"]
    assert sizes["weights_mb"] <= sizes["files_mb"]
    agreement = report["agreement"]
    assert agreement["ort_fp32"]["max_abs_logprob_diff"] < 1e-4 and agreement["ort_fp32"]["argmax_agreement"] == 1.0
    assert agreement["ort_int8"]["reference"] == "torch_hypernet" and agreement["ort_int8"]["max_abs_logprob_diff"] < 1
    assert set(report["goals"]) == {*TARGETS, "torch_hypernet_vs_ort_int8_b1"}
    assert report["goals"]["ort_int8_vs_ctranslate2_int8_b1"]["met"] is None  # no peers in this run


@pytest.mark.slow  # CTranslate2 and PyTorch eager each in a process of its own
def test_bench_peers_run_each_runtime_in_its_process_and_agree(tiny_run):
    report = bench(tiny_run, task="rte", batches=(1,), seq=8, rounds=1, threads=1, heads=("generate",),
                   progress_bar=False, peers=True)
    variants = {r["variant"] for r in report["results"]}
    expected = {PLAIN, HYPERNET, *(ct2_variant(p, t) for p in ("int8", "fp32") for t in CT2_THREADS)}
    assert expected <= variants
    assert report["settings"][PLAIN]["omp_wait_policy"] == "default (unset)"
    best = report["peers"]["best"]["ctranslate2_int8"]["1"]
    assert best["intra_threads"] in CT2_THREADS and best["p50_ms"] > 0
    assert report["peers"]["sizes_mb"]["ctranslate2_int8"] < report["peers"]["sizes_mb"]["ctranslate2_fp32"]
    agreement = report["agreement"]
    assert agreement["ctranslate2_fp32"]["max_abs_logprob_diff"] < 1e-4  # the same weights, computed alike
    assert agreement[PLAIN]["max_abs_logprob_diff"] < 1e-4
    assert report["goals"]["ort_int8_vs_ctranslate2_int8_b1"]["value"] > 0
    assert {"load_mb", "generate_mb", "files_mb"} <= set(report["resident"]["ort_int8"])


def test_ratios_are_p50_speed_ups():
    rows = [{"head": "classify", "batch": 1, "variant": v, "p50_ms": ms} for v, ms in
            (("torch_hypernet", 30.0), ("torch_folded", 20.0), ("ort_fp32", 10.0), ("ort_int8", 5.0),
             ("ort_plain_backbone", 9.0), ("ort_int8_plain_backbone", 4.0))]
    found = ratios(rows)
    assert found["ort_fp32_vs_torch_hypernet"] == {"classify": {"1": 3.0}}
    assert found["ort_fp32_vs_plain_backbone"] == {"classify": {"1": 0.9}}
    assert found["ort_int8_vs_int8_plain_backbone"] == {"classify": {"1": 0.8}}
    assert found["ort_int8_vs_ort_fp32"] == {"classify": {"1": 2.0}}
    assert found["ort_int8_generate_graph_vs_loop"] == {"classify": {}}  # not run: no batches


def test_goals_read_the_report():
    rows = [{"head": "generate", "batch": b, "variant": v, "p50_ms": ms} for b, v, ms in
            ((1, "ort_int8", 10.0), (8, "ort_int8", 20.0), (8, "ort_int8_plain_backbone", 19.5),
             (1, "torch_hypernet", 80.0), (1, "torch_eager_hypernet", 50.0))]
    report = {"results": rows, "export_sizes": {"ort_int8": {"generate": {"files_mb": 60.0, "weights_mb": 58.0}}},
              "peers": {"sizes_mb": {"ctranslate2_int8": 58.0},
                        "best": {"ctranslate2_int8": {"1": {"p50_ms": 14.0}, "8": {"p50_ms": 30.0}}}},
              "decode_steps": [{"variant": "ort_int8", "batch": 1, "vs_bound": 1.5}],
              "resident": {"ort_int8": {"files_mb": 60.0, "load_mb": 66.0}}}
    found = goals(report)
    assert found["ort_int8_vs_ctranslate2_int8_b1"] == {"value": 1.4, "target": 1.3, "met": True}
    assert found["ort_int8_vs_ctranslate2_int8_b8"]["met"] is False
    assert found["export_int8_vs_ctranslate2_int8_files"]["value"] == pytest.approx(60 / 58)
    assert found["decode_step_int8_vs_bound_b1"]["met"] is False and found["resident_int8_vs_files"]["met"] is True
    assert found["adapter_cost_int8_b8"]["value"] == pytest.approx(20 / 19.5 - 1)
    assert found["export_fp32_vs_weight_bytes"]["met"] is None  # not measured
    seed = found["torch_hypernet_vs_ort_int8_b1"]
    assert seed["value"] == 5.0 and seed["torch_variant"] == "torch_eager_hypernet"  # the faster setting


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
    (["--train", "--rounds", "0", "--backbone", "t5-test"],
     "invalid value for '--rounds': input should be greater than or equal to 1"),
    (["--new-tokens", "0", "--backbone", "t5-test"],
     "invalid value for '--new-tokens': input should be greater than or equal to 1"),
    (["--peers", "--head", "classify", "--backbone", "t5-test"],
     "--peers compares generation: add the generate head (--head generate)"),
])
def test_bench_bad_input_is_one_line_and_exit_2(args, message):
    base = ["bench", "--recipe", str(TINY_RECIPE)]
    result = runner.invoke(app, base + (args if "--task" in args else ["--task", "rte", *args]))
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bench_peers_without_ctranslate2_is_one_line_before_any_work(monkeypatch):
    monkeypatch.setattr(peers, "installed", lambda package: package != "ctranslate2")
    monkeypatch.setattr("hyperexport.bench.inference.load_subject", lambda *a: pytest.fail("slow work began"))
    result = runner.invoke(app, ["bench", "--task", "rte", "--backbone", "t5-test", "--peers"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert ("--peers needs CTranslate2, which is not installed here: pip install -e '.[peers]' (ctranslate2)"
            in result.stderr)


def test_bench_generates_the_tokens_asked_for(tiny_run):
    report = bench(tiny_run, task="rte", batches=(2,), seq=8, rounds=1, threads=1, heads=("generate",),
                   progress_bar=False, memory=False, new_tokens=5)
    assert report["new_tokens"] == 5
    for row in report["results"]:  # tokens/s counts the 5 tokens of each of the 2 rows
        assert row["throughput"] == pytest.approx(2 * 5 / (row["p50_ms"] / 1e3))
