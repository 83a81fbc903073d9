"""The Polygraphy loader chain each plan is built with, and Polygraphy's failures as one-line errors.

Polygraphy's loaders are lazy: they are made here, on a machine without tensorrt, and their settings read
back. Calling them (parse, build) needs TensorRT and a GPU: marked gpu/trt, skipped elsewhere."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import tensorrt_missing
from hyperexport.contracts.export import IoSpec
from hyperexport.contracts.names import plan_name
from hyperexport.errors import UserError
from hyperexport.export.tensorrt.loaders import limit_workspace, plan_loaders, polygraphy_failures
from hyperexport.export.tensorrt.profiles import ShapeRanges, graph_profiles

MISSING = tensorrt_missing()


@pytest.fixture(scope="module")
def graphs(tiny_rte_three_graphs):
    """(the tiny rte ONNX export, its io spec, the profiles of --batch 1:4:16 --seq 2:32:64)."""
    folder = tiny_rte_three_graphs.export  # what engines build from; only read
    spec = IoSpec.read(folder)
    return folder, spec, graph_profiles(spec, ShapeRanges.from_flags("1:4:16", "2:32:64"))


# ---- the loader chain ------------------------------------------------------------------------------
@pytest.mark.parametrize("precision, tensorrt_version, strongly_typed", [("fp32", "10.15.1.29", True),
                                                                          ("bf16", "11.4.0.106", False)])
def test_every_plan_is_built_from_its_graph_file_with_one_profile_and_the_shared_timing_cache(
        graphs, tmp_path, precision, tensorrt_version, strongly_typed):
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, PostprocessConfig

    folder, spec, profiles = graphs
    cache = tmp_path / "caches" / "trt-timing.cache"
    assert set(profiles) == {"classify_model.onnx", "encoder_model.onnx", "decoder_model.onnx",
                             "decoder_with_past_model.onnx"}
    for graph, profile in profiles.items():
        loaders = plan_loaders(folder / graph, tmp_path / plan_name(graph), profile, precision=precision,
                               tensorrt_version=tensorrt_version, timing_cache=cache)
        assert isinstance(loaders.network, NetworkFromOnnxPath)  # the file variant: external weights resolve
        assert loaders.network.path == str(folder / graph)
        assert loaders.network.strongly_typed is strongly_typed  # TensorRT 11: always, without the flag
        assert isinstance(loaders.config, CreateConfig) and loaders.config.tf32 is (precision != "fp32")
        [built] = loaders.config.profiles
        assert list(built) == [tensor.name for tensor in spec.graphs[graph].inputs]
        assert {name: {key: list(getattr(shapes, key)) for key in ("min", "opt", "max")}
                for name, shapes in built.items()} \
            == profile
        assert loaders.config.timing_cache_path == str(cache) and loaders.plan == tmp_path / plan_name(graph)
        engine = loaders.engine_bytes(("builder", "network", "parser"))  # TensorRT's parsed network: a stand-in
        assert isinstance(engine, EngineBytesFromNetwork) and engine.timing_cache_path == str(cache)
        # Polygraphy keeps these private; read to show that the workspace limit is part of the config
        assert isinstance(engine._config, PostprocessConfig) and engine._config._config is loaders.config
        assert engine._config._func is limit_workspace
    encoder = plan_loaders(folder / "encoder_model.onnx", tmp_path / "e.plan", profiles["encoder_model.onnx"],
                           precision=precision, tensorrt_version=tensorrt_version, timing_cache=cache)
    input_ids = encoder.config.profiles[0]["input_ids"]
    assert (list(input_ids.min), list(input_ids.opt), list(input_ids.max)) == ([1, 2], [4, 32], [16, 64])
    past = plan_loaders(folder / "decoder_with_past_model.onnx", tmp_path / "d.plan",
                        profiles["decoder_with_past_model.onnx"], precision=precision,
                        tensorrt_version=tensorrt_version, timing_cache=cache).config.profiles[0]
    key = past["past_key_values.0.decoder.key"]  # [batch, heads 4, past 1..63, d_kv 8]
    assert (list(key.min), list(key.opt), list(key.max)) == ([1, 4, 1, 8], [4, 4, 32, 8], [16, 4, 63, 8])
    assert not cache.parent.exists()  # nothing was built, nothing written


def test_the_loader_chain_is_made_without_importing_tensorrt(graphs):
    folder, _, profiles = graphs
    code = ("import json, sys; from pathlib import Path; from hyperexport.export.tensorrt.loaders import plan_loaders; "
            "plan_loaders(Path(sys.argv[1]), Path('x.plan'), json.loads(sys.argv[2]), precision='bf16', "
            "tensorrt_version='10.15.1.29', timing_cache=Path('t.cache')); "
            "print(sorted(m for m in ('tensorrt', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, str(folder / "encoder_model.onnx"),
                             json.dumps(profiles["encoder_model.onnx"])], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


# ---- Polygraphy's failures -------------------------------------------------------------------------
def test_a_parser_failure_is_one_line_naming_the_first_error_and_the_errors_stay_printed(capsys):
    from polygraphy.backend.trt.util import check_onnx_parser_errors  # what NetworkFromOnnxPath runs after parsing
    from polygraphy.logger import G_LOGGER

    errors = ["In node 7 with name: /Unique and operator: Unique (parseNode): UNSUPPORTED_NODE:\n"
              "    No importer registered for op: Unique", "In node 9 with name: /If (parseNode): UNSUPPORTED_NODE"]
    parser = SimpleNamespace(num_errors=2, get_error=errors.__getitem__)  # TensorRT's parser is not here: its answers
    severity = G_LOGGER.module_severity.get()
    with pytest.raises(UserError) as error:
        with polygraphy_failures("TensorRT's ONNX parser refused encoder_model.onnx"):
            check_onnx_parser_errors(parser, False)
    assert str(error.value) == ("TensorRT's ONNX parser refused encoder_model.onnx (2 errors; first: In node 7 with "
                                "name: /Unique and operator: Unique (parseNode): UNSUPPORTED_NODE: No importer "
                                "registered for op: Unique)")
    printed = capsys.readouterr()
    assert "[E] In node 9 with name: /If" in printed.out  # the details stay on screen
    assert "Could not parse ONNX correctly" not in printed.out + printed.err  # the failure is said once, by us
    assert G_LOGGER.use_python_logging_system is False and G_LOGGER.module_severity.get() == severity
    assert logging.getLogger("Polygraphy").handlers == []


def test_a_failure_without_logged_errors_names_polygraphys_message_and_the_hint(capsys):
    from polygraphy.logger import G_LOGGER

    with pytest.raises(UserError) as error:
        with polygraphy_failures("TensorRT could not build an engine from g.onnx", hint="check the GPU memory"):
            G_LOGGER.info("Building engine")  # below the warning level: not printed
            G_LOGGER.critical("Invalid Engine. Please ensure the engine was built correctly")
    assert str(error.value) == ("TensorRT could not build an engine from g.onnx (Invalid Engine. Please ensure the "
                                "engine was built correctly): check the GPU memory")
    assert "Building engine" not in capsys.readouterr().out


def test_a_block_that_succeeds_passes_through_and_other_errors_are_not_rewritten():
    from polygraphy.logger import G_LOGGER

    with polygraphy_failures("never"):
        G_LOGGER.error("a logged error alone is no failure")
    with pytest.raises(FileNotFoundError):  # not Polygraphy's: not ours to rename
        with polygraphy_failures("never"):
            raise FileNotFoundError("t.cache.lock")
    assert G_LOGGER.use_python_logging_system is False


# ---- on an NVIDIA GPU with tensorrt ----------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(MISSING is not None, reason=f"needs an NVIDIA GPU and tensorrt: {MISSING}")
def test_a_graph_tensorrt_cannot_parse_is_one_line_naming_the_first_error(tmp_path):
    import onnx
    import tensorrt
    from onnx import TensorProto, helper

    from hyperexport.export.tensorrt.loaders import build_plan

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch_size", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch_size", 4])
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example")], "g", [x], [y])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                             helper.make_opsetid("com.example", 1)]),
              path)
    profile = {"x": {"min": [1, 4], "opt": [2, 4], "max": [4, 4]}}
    with pytest.raises(UserError, match=r"^TensorRT's ONNX parser refused bad.onnx \(\d+ errors?; first: .+\)$"):
        build_plan(plan_loaders(path, tmp_path / "bad.plan", profile, precision="fp32",
                                tensorrt_version=tensorrt.__version__, timing_cache=tmp_path / "t.cache"))
    assert not (tmp_path / "bad.plan").exists()
