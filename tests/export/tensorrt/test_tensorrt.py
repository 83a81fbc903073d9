"""TensorRT engines through Polygraphy. On any machine: the clear errors, the loader chain each plan is
built with, Polygraphy's failures as one-line errors, plan and profile refusals, the runner's inputs and
outputs, and chunked batches (on the source ONNX graphs). Engine build, run and parity on an NVIDIA GPU
with the tensorrt package (marked gpu/trt, skipped elsewhere with the reason)."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import tensorrt_missing
from hyperexport.contracts.export import ExportFolder, GenerationIds
from hyperexport.contracts.names import CLASSIFY_GRAPH
from hyperexport.errors import UserError
from hyperexport.runtime.tensorrt import check_in_profile, check_plan_compatible, engine_inputs, host_outputs
from hyperexport.verify.runners import ExportRunner, ParityInputs, infer_in_chunks
from hyperexport_cli.main import app

MISSING = tensorrt_missing()
BUILT = {"task": "rte", "tensorrt_version": "10.15.1.29", "gpu_name": "NVIDIA H100 80GB HBM3",
         "compute_capability": "9.0"}


# ---- any machine ----------------------------------------------------------------------------------
@pytest.mark.skipif(MISSING is None, reason="this machine has a GPU and tensorrt")
def test_export_tensorrt_without_gpu_or_tensorrt_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["export", "--task", "rte", "--format", "tensorrt", "--precision", "bf16"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: TensorRT engines need ") and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.strip().endswith(
        ": pip install -e '.[gpu]' (tensorrt, onnxruntime-gpu, polygraphy) on a machine with an NVIDIA GPU")
    assert ("the tensorrt package" in result.stderr) == (MISSING == "the tensorrt package is not installed")
    assert ("the polygraphy package" in result.stderr) == (importlib.util.find_spec("polygraphy") is None)
    assert list(tmp_path.iterdir()) == []


def test_tensorrt_without_polygraphy_names_it(monkeypatch):
    from hyperexport.export.tensorrt.build import require_tensorrt

    monkeypatch.setitem(sys.modules, "polygraphy", None)  # as if it were not installed
    with pytest.raises(UserError,
                       match="TensorRT engines need .*the polygraphy package.*: pip install -e '.\\[gpu\\]'"):
        require_tensorrt()


def test_bad_profile_flags_and_precisions_fail_before_the_gpu_check(tmp_path):
    from hyperexport.export.tensorrt.build import export_tensorrt

    with pytest.raises(UserError, match="--seq '64:8:128': need min <= opt <= max"):
        export_tensorrt(task="rte", seq="64:8:128", output=tmp_path / "out")
    with pytest.raises(UserError, match="precision 'int8' is not available for tensorrt"):
        export_tensorrt(task="rte", precision="int8", output=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_plan_from_the_same_tensorrt_and_gpu_is_accepted():
    check_plan_compatible("exports/rte/tensorrt", SimpleNamespace(**BUILT),
                          {k: v for k, v in BUILT.items() if k != "task"})


@pytest.mark.parametrize("fact, value", [("tensorrt_version", "11.4.0.106"), ("compute_capability", "8.0"),
                                         ("gpu_name", "NVIDIA H200")])
def test_a_plan_from_another_tensorrt_or_gpu_is_refused(fact, value):
    here = {**BUILT, fact: value}
    with pytest.raises(UserError) as error:
        check_plan_compatible("exports/rte/tensorrt", SimpleNamespace(**BUILT), here)
    message = str(error.value)
    assert "holds plans built with TensorRT 10.15.1.29 on NVIDIA H100 80GB HBM3 (sm 9.0)" in message
    assert value in message and "hyperexport export --task rte --format tensorrt --overwrite" in message


def _random_inputs(rows: int, seed: int = 5) -> ParityInputs:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 300, (rows, 9), generator=generator)  # [B, S]
    mask = torch.ones_like(input_ids)
    mask[3, 5:] = 0
    return ParityInputs(input_ids, mask, torch.randint(3, 300, (rows, 3), generator=generator),
                        torch.tensor([[50, 1], [51, 1]]), 3)


def test_chunked_inference_equals_one_batch_on_the_source_graphs(engine_folder_without_plans):
    """verify's export runner in chunks (as it runs an engine's profile max batch) on the engine folder's
    source graphs through ONNX Runtime, against the whole batch in one call."""
    from hyperexport.runtime.backends import OnnxRuntimeBackend

    export = ExportFolder.open(engine_folder_without_plans)
    inputs = _random_inputs(7)
    with ExportRunner("onnxruntime", OnnxRuntimeBackend(export.source_dir), export.generation_ids) as runner:
        whole = runner.infer(inputs)
        chunked = infer_in_chunks(runner.infer, inputs, 3, export.generation_ids.pad_token_id)
    assert set(chunked) == set(whole) == {"scores", "logits", "tokens"}
    for name in whole:
        assert chunked[name].shape == whole[name].shape, name
        np.testing.assert_allclose(chunked[name], whole[name], rtol=0, atol=1e-5)


def test_chunks_that_stop_early_are_padded_like_generate(engine_folder_without_plans):
    """Real graphs: the most common first token is made </s>, the rows that say it first go into one
    chunk, which stops after one token while the other chunks go on; joined, the tokens are the
    whole batch's, padded as `generate()` pads."""
    from hyperexport.runtime.backends import OnnxRuntimeBackend

    export = ExportFolder.open(engine_folder_without_plans)
    ids = export.generation_ids
    inputs = _random_inputs(12)
    with OnnxRuntimeBackend(export.source_dir) as backend:
        first = ExportRunner("ort", backend, ids).infer(inputs)["tokens"][:, 1]  # [B]
        eos = int(np.bincount(first).argmax())
        stoppers = first == eos
        assert 2 <= stoppers.sum() < len(first) - 1  # some rows stop at once, the others go on
        order = torch.as_tensor(np.concatenate([np.flatnonzero(stoppers), np.flatnonzero(~stoppers)]))
        inputs = ParityInputs(inputs.input_ids[order], inputs.attention_mask[order], inputs.decoder_input_ids[order],
                              inputs.label_ids, inputs.max_new_tokens)
        ids = GenerationIds(ids.decoder_start_token_id, eos, pad_token_id=7)  # a pad no chunk generates itself
        runner = ExportRunner("ort", backend, ids)
        step = int(stoppers.sum())
        whole, chunked = runner.infer(inputs), infer_in_chunks(runner.infer, inputs, step, ids.pad_token_id)
        first_chunk = runner.infer(ParityInputs(inputs.input_ids[:step], inputs.attention_mask[:step],
                                                inputs.decoder_input_ids[:step], inputs.label_ids,
                                                inputs.max_new_tokens))
    assert first_chunk["tokens"].shape[1] == 2 < whole["tokens"].shape[1] == 1 + inputs.max_new_tokens
    assert (whole["tokens"][:step, 2:] == 7).all()  # padded after </s>
    np.testing.assert_array_equal(chunked["tokens"], whole["tokens"])
    for name in ("scores", "logits"):
        np.testing.assert_allclose(chunked[name], whole[name], rtol=0, atol=1e-5)


def test_inputs_outside_the_profile_are_refused():
    profile = {"min": [1, 1], "opt": [8, 64], "max": [32, 256]}
    check_in_profile("encoder_model.onnx", "input_ids", (32, 256), profile)
    for shape in ((33, 10), (1, 257), (4,)):
        with pytest.raises(UserError, match=r"outside the engine's profile \[1, 1\]..\[32, 256\]: rebuild"):
            check_in_profile("encoder_model.onnx", "input_ids", shape, profile)


def test_engine_inputs_are_the_graphs_inputs_in_the_engines_types_within_the_profile(engine_folder_without_plans):
    export = ExportFolder.open(engine_folder_without_plans)
    graph = "decoder_model.onnx"
    graph_io, profile = export.io_spec.graphs[graph], export.manifest.profiles[graph]
    feeds = {"input_ids": np.ones((2, 1), np.int32), "encoder_hidden_states": np.zeros((2, 5, 32), np.float64),
             "encoder_attention_mask": np.ones((2, 5), np.int64), "attention_mask": np.ones((2, 5), np.int64)}
    tensors = engine_inputs(graph, feeds, graph_io, profile)
    assert list(tensors) == ["encoder_attention_mask", "input_ids", "encoder_hidden_states"]  # the graph's, in order
    assert {name: tensor.dtype for name, tensor in tensors.items()} == {
        "encoder_attention_mask": torch.int64, "input_ids": torch.int64, "encoder_hidden_states": torch.float32}
    assert all(tensor.device.type == "cpu" for tensor in tensors.values())  # Polygraphy copies them to the GPU
    too_many = {**feeds, "input_ids": np.ones((17, 1), np.int64)}  # the profile's batch is 1..16
    with pytest.raises(UserError, match=r"decoder_model.onnx input input_ids has shape \[17, 1\], outside the engine's "
                                        r"profile \[1, 1\]..\[16, 64\]: rebuild with wider --batch / --seq ranges"):
        engine_inputs(graph, too_many, graph_io, profile)
    with pytest.raises(UserError, match="decoder_model.onnx needs input encoder_hidden_states"):
        engine_inputs(graph, {k: v for k, v in feeds.items() if k != "encoder_hidden_states"}, graph_io, profile)


def test_host_outputs_are_numpy_arrays_of_their_own_and_bf16_comes_back_exactly():
    values = torch.tensor([[1.0, -2.5, 3.140625], [65280.0, 1e-3, 0.0]])
    bf16, ids = values.to(torch.bfloat16), torch.tensor([[0, 5, 1]])
    outputs = host_outputs({"logits": bf16, "tokens": ids})
    assert outputs["logits"].dtype == np.float32 and outputs["tokens"].dtype == np.int64
    np.testing.assert_array_equal(outputs["logits"], bf16.float().numpy())
    ids[0, 0] = 9  # the runner reuses its output buffers: what we returned must not change with them
    assert outputs["tokens"].tolist() == [[0, 5, 1]]


@pytest.fixture(scope="module")
def engine_folder_without_plans(tiny_rte_three_graphs, tmp_path_factory):
    """An engine folder as `export --format tensorrt` lays it out, minus the plans (they need a GPU):
    the source ONNX export under onnx/, the task files, and a manifest written by hand."""
    import shutil

    from hyperexport.contracts.export import ExportManifest, IoSpec, write_export_manifest
    from hyperexport.contracts.manifest import relative_path
    from hyperexport.export.tensorrt.profiles import ShapeRanges, graph_profiles

    root = tmp_path_factory.mktemp("engine-folder")
    copy = tiny_rte_three_graphs.copy_to(root)  # the layout engines are built from
    run, onnx_folder = copy.run, copy.export
    folder = root / "exports" / "rte" / "tensorrt"
    shutil.copytree(onnx_folder, folder / "onnx")
    for name in ("task.json", "io_spec.json", "config.json", "tokenizer"):
        copy = shutil.copytree if (onnx_folder / name).is_dir() else shutil.copy
        copy(onnx_folder / name, folder / name)
    ranges = ShapeRanges.from_flags("1:4:16", "2:32:64")
    write_export_manifest(folder, ExportManifest(
        format="tensorrt", head="both", precision="fp32", opset=18, task="rte", source_task_sha256={},
        **{k: v for k, v in BUILT.items() if k != "task"}, profile_ranges=ranges.as_dict(),
        profiles=graph_profiles(IoSpec.read(onnx_folder), ranges), source_run=relative_path(run, folder)))
    return folder


@pytest.mark.skipif(MISSING is None, reason="this machine has a GPU and tensorrt")
def test_verify_of_an_engine_folder_without_gpu_is_one_line_exit_2_and_writes_no_report(engine_folder_without_plans):
    result = CliRunner().invoke(app, ["verify", str(engine_folder_without_plans)])
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("error: TensorRT engines need ") and len(result.stderr.strip().splitlines()) == 1
    assert not (engine_folder_without_plans / "parity_report.json").exists()


def test_the_compatibility_check_of_an_engine_folder_uses_its_profiles_and_tensorrt_version(
        engine_folder_without_plans):
    from hyperexport.export.tensorrt.compat import export_compatibility

    report = export_compatibility(ExportFolder.open(engine_folder_without_plans))
    assert report["passed"] and report["tensorrt_operator_list"] == "10.15"
    assert report["profile_ranges"] == {"batch": [1, 4, 16], "seq": [2, 32, 64]}


def test_deploy_names_the_missing_plans(engine_folder_without_plans, tmp_path):
    from hyperexport.serve.deploy import deploy

    report = engine_folder_without_plans / "parity_report.json"
    report.write_text(json.dumps({"passed": True, "precision": "fp32"}))  # as if verify had passed on a GPU
    try:
        with pytest.raises(UserError, match="has no classify_model.plan: build the engines with"):
            deploy(task="rte", fmt="tensorrt", triton_repo=tmp_path / "repo", export_dir=engine_folder_without_plans)
    finally:
        report.unlink()
    assert not (tmp_path / "repo").exists()


@pytest.mark.skipif(MISSING is None, reason="this machine has a GPU and tensorrt")
def test_bench_with_engines_but_no_gpu_fails_first_in_one_line(engine_folder_without_plans):
    result = CliRunner().invoke(app, ["bench", "--task", "rte", "--tensorrt", str(engine_folder_without_plans)])
    assert result.exit_code == 2 and result.stderr.startswith("error: TensorRT engines need ")


def test_bench_reports_engines_against_onnx_runtime_when_they_ran():
    from hyperexport.bench.inference import RATIOS, ratios

    rows = [{"head": "classify", "batch": 1, "variant": v, "p50_ms": ms} for v, ms in
            (("torch_hypernet", 8.0), ("torch_folded", 6.0), ("ort_fp32", 4.0), ("ort_int8", 2.0),
             ("ort_plain_backbone", 3.0), ("tensorrt_bf16", 0.5))]
    found = ratios(rows)
    assert found["tensorrt_bf16_vs_ort_fp32"] == {"classify": {"1": 8.0}}
    assert set(found) == {*RATIOS, "tensorrt_bf16_vs_ort_fp32"}
    assert "tensorrt_bf16_vs_ort_fp32" not in ratios([r for r in rows if r["variant"] != "tensorrt_bf16"])


def test_predict_names_the_missing_plans(engine_folder_without_plans):
    from hyperexport.runtime.predict import predict

    with pytest.raises(UserError, match="has neither classify_model.plan nor encoder_model.plan"):
        predict(engine_folder_without_plans, [{"sentence1": "a", "sentence2": "b"}])


FOREIGN_PLAN = ("{tmp}/foreign holds plans built with TensorRT 10.15.1.29 on NVIDIA H100 80GB HBM3 (sm 9.0), but this "
                "machine has TensorRT 11.4.0.106 on NVIDIA H200 (sm 9.0): rebuild them here with "
                "`hyperexport export --task rte --format tensorrt --overwrite`")


def test_a_foreign_plan_is_one_line_exit_2_in_predict_verify_and_bench(engine_folder_without_plans, tmp_path,
                                                                        monkeypatch):
    """Any machine: a machine with another TensorRT and GPU is simulated (tensorrt present, its facts
    differ from the manifest's); the plans are refused before anything is deserialized or run."""
    import shutil

    from conftest import reseal
    from hyperexport.contracts.names import plan_name

    foreign = tmp_path / "foreign"
    shutil.copytree(engine_folder_without_plans, foreign)
    manifest = json.loads((foreign / "manifest.json").read_text())
    for graph in manifest["profiles"]:
        (foreign / plan_name(graph)).write_bytes(b"a plan of the build machine")
    reseal(foreign)
    monkeypatch.setattr("hyperexport.runtime.tensorrt.require_tensorrt", lambda: object())
    monkeypatch.setattr("hyperexport.export.tensorrt.build.device_facts", lambda trt: {
        "tensorrt_version": "11.4.0.106", "gpu_name": "NVIDIA H200", "compute_capability": "9.0"})
    before = sorted(p.name for p in foreign.iterdir())
    for args in (["predict", str(foreign), '{"sentence1": "a", "sentence2": "b"}'], ["verify", str(foreign)],
                 ["bench", "--run", str(ExportFolder.open(foreign).source_run), "--task", "rte", "--tensorrt",
                  str(foreign)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert result.stderr.strip() == "error: " + FOREIGN_PLAN.replace("{tmp}", str(tmp_path)), args
        assert result.stdout == ""
    assert sorted(p.name for p in foreign.iterdir()) == before  # verify wrote no report


# ---- on an NVIDIA GPU with tensorrt ----------------------------------------------------------------
@pytest.fixture(scope="module")
def engines(tiny_rte, tmp_path_factory):
    from hyperexport.export.tensorrt.build import export_tensorrt

    root = tmp_path_factory.mktemp("engines")
    copy = tiny_rte.copy_to(root)
    run, onnx_folder = copy.run, copy.export
    cache = root / "caches" / "trt-timing.cache"  # shared by both builds, as with --timing-cache
    built = {precision: export_tensorrt(run, task="rte", precision=precision, batch="1:4:16", seq="2:32:64",
                                        output=root / "exports" / "rte" / f"tensorrt-{precision}", progress=False,
                                        timing_cache=cache)
             for precision in ("fp32", "bf16")}
    assert cache.stat().st_size > 0
    return run, onnx_folder, built


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(MISSING is not None, reason=f"needs an NVIDIA GPU and tensorrt: {MISSING}")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_engine_folder_holds_plans_and_a_manifest_of_the_build(engines, precision):
    import tensorrt

    folder = engines[2][precision]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "tensorrt" and manifest["precision"] == precision
    assert manifest["tensorrt_version"] == tensorrt.__version__
    assert manifest["gpu_name"] == torch.cuda.get_device_name()
    for graph in ("classify_model", "encoder_model", "decoder_model", "decoder_with_past_model"):
        assert (folder / f"{graph}.plan").stat().st_size > 0
        assert manifest["profiles"][f"{graph}.onnx"]
    assert manifest["tensorrt_compatibility"]["passed"] and manifest["tf32"] is (precision != "fp32")
    assert not list(folder.glob("*.cache*"))  # the timing cache lives outside the engine folder


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(MISSING is not None, reason=f"needs an NVIDIA GPU and tensorrt: {MISSING}")
def test_the_backend_runs_each_plan_like_onnx_runtime_runs_its_graph(engines):
    from hyperexport.runtime.backends import OnnxRuntimeBackend
    from hyperexport.runtime.tensorrt import TensorRTBackend

    folder = engines[2]["fp32"]
    generator = torch.Generator().manual_seed(2)
    feeds = {"input_ids": torch.randint(3, 300, (5, 11), generator=generator).numpy(),
             "attention_mask": np.ones((5, 11), np.int64)}
    with TensorRTBackend(folder) as engine, OnnxRuntimeBackend(folder / "onnx") as reference:
        assert engine.max_batch == 16 and engine.has(CLASSIFY_GRAPH) and not engine.has("other.onnx")
        for graph, output in ((CLASSIFY_GRAPH, "scores"), ("encoder_model.onnx", "last_hidden_state")):
            np.testing.assert_allclose(engine.infer(graph, feeds)[output], reference.infer(graph, feeds)[output],
                                       rtol=0, atol=1e-3)
        with pytest.raises(UserError, match="outside the engine's profile"):
            engine.infer(CLASSIFY_GRAPH,
                         {name: np.repeat(array, 4, axis=0) for name, array in feeds.items()})  # 20 rows


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(MISSING is not None, reason=f"needs an NVIDIA GPU and tensorrt: {MISSING}")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_engines_pass_verify_against_the_hypernetwork_model(engines, precision):
    from hyperexport.verify.parity import TENSORRT_TOLERANCES, verify

    report = verify(engines[2][precision], max_examples=16)
    rows = [row for row in report["comparisons"] if row["runner"] == "tensorrt"]
    bounds = TENSORRT_TOLERANCES[precision]  # fp32 grows by `relative` x the tiny model's values (under 100)
    grown = bounds.get("relative", 0) * 100
    assert rows and all(bounds[row["output"]] <= row["tolerance"] <= bounds[row["output"]] + grown for row in rows)
    assert report["passed"], [row for row in report["comparisons"] if not row["passed"]]


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(MISSING is not None, reason=f"needs an NVIDIA GPU and tensorrt: {MISSING}")
def test_engine_predictions_equal_onnx_runtimes_and_a_foreign_plan_is_refused(engines, tmp_path):
    import shutil

    from hyperexport.runtime.predict import predict

    _, onnx_folder, built = engines
    examples = [{"sentence1": "a cat sings", "sentence2": "a cat"}, {"sentence1": "x y", "sentence2": "z"}]
    expected = [r["label"] for r in predict(onnx_folder, examples)]
    assert [r["label"] for r in predict(built["fp32"], examples)] == expected
    foreign = tmp_path / "foreign"
    shutil.copytree(built["fp32"], foreign)
    manifest = json.loads((foreign / "manifest.json").read_text())
    (foreign / "manifest.json").write_text(json.dumps({**manifest, "tensorrt_version": "9.3.0"}))
    with pytest.raises(UserError, match="holds plans built with TensorRT 9.3.0"):
        predict(foreign, examples)
