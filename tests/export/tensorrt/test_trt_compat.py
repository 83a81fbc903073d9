"""TensorRT work that needs no GPU: profiles from --batch/--seq, and the ONNX compatibility check on real
exported graphs and on graphs built to fail it."""

from __future__ import annotations

from types import SimpleNamespace

import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper

from hyperexport.contracts.export import GraphIo, IoSpec, TensorSpec
from hyperexport.errors import UserError
from hyperexport.export.tensorrt.compat import (
    check_export,
    check_graph,
    operator_lists,
    require_compatible,
    target_version,
)
from hyperexport.export.tensorrt.profiles import Range, ShapeRanges, check_task_fits, graph_profiles, parse_range


@pytest.fixture(scope="module")
def run_and_export(tiny_rte):
    return tiny_rte.run, tiny_rte.export  # only read


@pytest.fixture(scope="module")
def exported(run_and_export):
    return run_and_export[1]


@pytest.fixture(scope="module")
def three_graphs(tiny_rte_three_graphs):
    """What `export --format tensorrt` builds engines from: optimum's three generate graphs."""
    return tiny_rte_three_graphs.export  # only read


# ---- profiles -------------------------------------------------------------------------------------
def test_ranges_parse_min_opt_max_and_a_single_number():
    assert parse_range("1:8:32", "--batch") == Range(1, 8, 32)
    assert parse_range(" 4 ", "--batch") == Range(4, 4, 4)


@pytest.mark.parametrize("text, message", [
    ("1:8", "is not min:opt:max"), ("a:b:c", "is not min:opt:max"), ("1:2:3:4", "is not min:opt:max"),
    ("0:8:32", "min must be at least 1"), ("8:4:32", "need min <= opt <= max, e.g. --batch 8:8:32"),
    ("1:64:32", "need min <= opt <= max, e.g. --batch 1:32:32"), ("1:1:9999999", "is above"),
])
def test_bad_ranges_are_one_line_errors(text, message):
    with pytest.raises(UserError, match=message) as error:
        parse_range(text, "--batch")
    assert "\n" not in str(error.value)


@given(st.text(max_size=20))
def test_any_flag_text_is_a_range_or_a_user_error(text):
    try:
        found = parse_range(text, "--seq")
    except UserError:
        return
    assert 1 <= found.min <= found.opt <= found.max


def test_seq_max_must_leave_room_for_a_past():
    with pytest.raises(UserError, match="at least 2"):
        ShapeRanges.from_flags("1:1:1", "1:1:1")


def test_profiles_cover_every_input_of_every_exported_graph_consistently(three_graphs):
    spec = IoSpec.read(three_graphs)
    profiles = graph_profiles(spec, ShapeRanges.from_flags("2:4:16", "3:32:128"))
    assert set(profiles) == set(spec.graphs) == {"classify_model.onnx", "encoder_model.onnx", "decoder_model.onnx",
                                                 "decoder_with_past_model.onnx"}
    assert profiles["encoder_model.onnx"]["input_ids"] == {"min": [2, 3], "opt": [4, 32], "max": [16, 128]}
    assert profiles["classify_model.onnx"]["attention_mask"] == {"min": [2, 3], "opt": [4, 32], "max": [16, 128]}
    first_step = profiles["decoder_model.onnx"]
    assert first_step["input_ids"] == {"min": [2, 1], "opt": [4, 1], "max": [16, 128]}
    assert first_step["encoder_hidden_states"]["max"] == [16, 128, 32]  # d_model stays fixed
    with_past = profiles["decoder_with_past_model.onnx"]
    # 4 heads, past of 1..127 tokens (the present adds one), d_kv 8
    assert with_past["past_key_values.0.decoder.key"] == {"min": [2, 4, 1, 8], "opt": [4, 4, 32, 8],
                                                          "max": [16, 4, 127, 8]}
    assert with_past["past_key_values.1.encoder.value"]["max"] == [16, 4, 128, 8]
    for graph in profiles.values():  # every input of a graph shares the batch range
        assert {(p["min"][0], p["opt"][0], p["max"][0]) for p in graph.values()} == {(2, 4, 16)}


def test_the_seq_range_must_fit_the_tasks_sources_and_generations():
    facts = SimpleNamespace(max_source_length=64, max_new_tokens=2)
    check_task_fits(ShapeRanges.from_flags("1:8:32", "1:32:64"), facts)
    with pytest.raises(UserError, match="--seq max 48 is below the task's max_source_length 64: use --seq 1:32:64"):
        check_task_fits(ShapeRanges.from_flags("1:8:32", "1:32:48"), facts)
    with pytest.raises(UserError, match="leaves no room for 8 generated tokens: raise it to at least 9"):
        check_task_fits(ShapeRanges.from_flags("1:8:32", "2:2:8"),
                        SimpleNamespace(max_source_length=4, max_new_tokens=8))


def test_an_axis_no_flag_covers_is_refused():
    spec = IoSpec({"g.onnx": GraphIo(inputs=(TensorSpec("x", "float", ("batch_size", "frames")),), outputs=())})
    with pytest.raises(UserError, match="g.onnx input x has dimension 'frames' that no profile covers"):
        graph_profiles(spec, ShapeRanges.from_flags())


# ---- the operator list ----------------------------------------------------------------------------
def test_operator_lists_name_real_onnx_operators_and_their_source():
    lists = operator_lists()
    assert set(lists["versions"]) == {"10.1", "10.15"}
    for version, listed in lists["versions"].items():
        assert listed["source"].startswith("https://github.com/onnx/onnx-tensorrt/")
        assert not set(listed["supported"]) & set(listed["unsupported"])
        unknown = [op for op in listed["supported"] if not onnx.defs.has(op)]
        # a few parser-only names (old or experimental ops) are not in onnx's registry
        assert set(unknown) <= {"ImageScaler", "ParametricSoftplus", "ScaledTanh", "Scatter", "Upsample",
                                "Crop", "Affine"}, (version, unknown)
    assert "If" in lists["versions"]["10.15"]["supported"]  # the parser has If; we refuse it ourselves
    assert "Unique" in lists["versions"]["10.15"]["unsupported"]


def test_the_targeted_list_follows_the_installed_version():
    assert target_version(None) == "10.15"
    assert target_version("10.8.0.43") == "10.1"
    assert target_version("11.4.0.106") == "10.15"
    with pytest.raises(UserError, match="oldest shipped is 10.1"):
        target_version("8.6.1")


# ---- the check ------------------------------------------------------------------------------------
def test_exported_graphs_pass_for_both_shipped_versions(exported, three_graphs):
    for version in ("10.1", "10.15"):
        report = check_export(exported, ShapeRanges.from_flags(), version)
        assert report["passed"], report["graphs"]
        assert report["tensorrt_operator_list"] == version
        assert set(report["graphs"]) == {"classify_model.onnx", "encoder_model.onnx", "decoder_with_past_model.onnx"}
        engines_from = check_export(three_graphs, ShapeRanges.from_flags(), version)
        assert engines_from["passed"] and "decoder_model.onnx" in engines_from["graphs"]


@pytest.fixture(scope="module")
def bf16_export(run_and_export, tmp_path_factory):
    from hyperexport.export.onnx import export_onnx

    return export_onnx(run_and_export[0], task="rte", head="both", output=tmp_path_factory.mktemp("bf16") / "bf16",
                       precision="bf16")


def test_bf16_graphs_pass_and_their_triton_configs_carry_bf16(bf16_export):
    from tritonclient.grpc import model_config_pb2

    from hyperexport.serve.triton_config import check_model_config, config_text, model_config

    assert check_export(bf16_export, ShapeRanges.from_flags())["passed"]
    past = IoSpec.read(bf16_export).graphs["decoder_with_past_model.onnx"]
    assert {i.dtype for i in past.inputs if i.name.startswith("past_key_values.")} == {"bfloat16"}
    config = model_config("rte_decoder_with_past", past, "decoder_with_past_model.onnx", "tensorrt", 8)
    types = {t.name: model_config_pb2.DataType.Name(t.data_type) for t in config.input}
    assert {types[i.name] for i in past.inputs if i.name.startswith("past_key_values.")} == {"TYPE_BF16"}
    assert types["input_ids"] == "TYPE_INT64" and "data_type: TYPE_BF16" in config_text(config)
    assert check_model_config(config, "rte_decoder_with_past", past, "decoder_with_past_model.onnx",
                              "tensorrt", 8) == []


def test_the_engine_runner_feeds_bf16_graphs_bfloat16_and_answers_in_float32(bf16_export):
    import numpy as np
    import torch

    from hyperexport.runtime.tensorrt import engine_inputs, host_outputs

    graph = "decoder_with_past_model.onnx"
    spec = IoSpec.read(bf16_export).graphs[graph]
    profile = graph_profiles(IoSpec.read(bf16_export), ShapeRanges.from_flags("1:4:16", "2:32:64"))[graph]
    past = np.linspace(-3, 3, 2 * 4 * 5 * 8, dtype=np.float32).reshape(2, 4, 5, 8)  # [B, heads, past, d_kv]
    feeds = {name: past for name in profile if name.startswith("past_key_values.")}
    feeds.update(input_ids=np.ones((2, 1), np.int64), encoder_attention_mask=np.ones((2, 6), np.int64))
    for name in (n for n in profile if n.startswith("past_key_values.") and ".encoder." in n):
        feeds[name] = np.zeros((2, 4, 6, 8), np.float32)  # cross-attention: the source length
    tensors = engine_inputs(graph, feeds, spec, profile)
    assert {t.dtype for n, t in tensors.items() if n.startswith("past_key_values.")} == {torch.bfloat16}
    assert tensors["input_ids"].dtype == torch.int64
    back = host_outputs({"present.0.decoder.key": tensors["past_key_values.0.decoder.key"]})["present.0.decoder.key"]
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, torch.from_numpy(past).to(torch.bfloat16).float().numpy())  # rounded once
    assert engine_inputs(graph, {**feeds, "past_key_values.0.decoder.key": back}, spec, profile)[
        "past_key_values.0.decoder.key"].equal(tensors["past_key_values.0.decoder.key"])  # and fed back unchanged
    import ml_dtypes  # ONNX Runtime's bfloat16 outputs: numpy arrays of ml_dtypes' type, which torch cannot read

    from_onnxruntime = {**feeds, "past_key_values.0.decoder.key": past.astype(ml_dtypes.bfloat16)}
    assert engine_inputs(graph, from_onnxruntime, spec, profile)["past_key_values.0.decoder.key"].equal(
        tensors["past_key_values.0.decoder.key"])


def _graph(nodes, inputs, outputs, opset=18, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    return helper.make_model(graph, opset_imports=opsets)


def _tensor(name, *shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def test_an_unsupported_op_an_if_node_and_a_custom_op_are_each_named(tmp_path):
    x, y = _tensor("x", "batch_size", 4), _tensor("y", "batch_size", 4)
    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("Identity", ["x"], [f"{name}_out"])], name, [], [_tensor(f"{name}_out", "batch_size", 4)])
    nodes = [
        helper.make_node("Unique", ["x"], ["u"]),
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "s"], ["c"]),
        helper.make_node("If", ["c"], ["y"], then_branch=branch("then"), else_branch=branch("else")),
        helper.make_node("FastGelu", ["x"], ["g"], domain="com.microsoft"),
    ]
    path = tmp_path / "bad.onnx"
    onnx.save(_graph(nodes, [x], [y], extra_opsets=[helper.make_opsetid("com.microsoft", 1)]), path)
    problems = check_graph(path, ShapeRanges.from_flags(), "10.15")
    assert problems == [
        "bad.onnx: an If node (conditional graph) cannot go into an engine: export the decoders separately (1 node)",
        "bad.onnx: operator Unique is not in TensorRT 10.15's supported ONNX operators (1 node)",
        "bad.onnx: operator com.microsoft.FastGelu is not in TensorRT 10.15's supported ONNX operators (1 node)",
    ]
    with pytest.raises(UserError, match=r"not TensorRT-compatible: bad.onnx: an If node .* \(and 2 more problems\)"):
        require_compatible(tmp_path, ShapeRanges.from_flags(), "10.15")


def test_ops_inside_subgraphs_are_checked(tmp_path):
    body = helper.make_graph([helper.make_node("NonMaxSuppression", ["b"], ["o"]),
                              helper.make_node("Unique", ["b"], ["u"])], "body", [], [_tensor("o", 1)])
    loop = helper.make_node("Loop", ["m", "cond"], ["out"], body=body)
    path = tmp_path / "loop.onnx"
    onnx.save(_graph([loop], [_tensor("m", dtype=TensorProto.INT64), _tensor("cond", dtype=TensorProto.BOOL)],
                     [_tensor("out", 1)]), path)
    assert check_graph(path, ShapeRanges.from_flags(), "10.15") == [
        "loop.onnx: operator Unique is not in TensorRT 10.15's supported ONNX operators (1 node)"]


def test_opset_range_restrictions_io_types_and_uncovered_shapes(tmp_path):
    nodes = [helper.make_node("LayerNormalization", ["x", "w"], ["y", "mean"]),
             helper.make_node("ScatterND", ["x", "i", "x"], ["z"], reduction="add")]
    inputs = [_tensor("x", "batch_size", "frames"), _tensor("w", 4), _tensor("i", 1, 2, dtype=TensorProto.INT64),
              _tensor("s", "batch_size", dtype=TensorProto.STRING)]
    path = tmp_path / "odd.onnx"
    onnx.save(_graph(nodes, inputs, [_tensor("y", "batch_size", 4)], opset=21), path)
    problems = check_graph(path, ShapeRanges.from_flags(), "10.1")
    assert problems[0] == "odd.onnx: opset 21 is outside TensorRT 10.1's range 9-20"
    assert any("LayerNormalization with more than its first output Y" in p for p in problems)
    assert any("ScatterND with reduction 'add'" in p for p in problems)
    assert "odd.onnx: input s is string, which a TensorRT engine cannot take" in problems
    assert any("input x has dimension 'frames' that no profile covers" in p for p in problems)
    assert check_graph(path, ShapeRanges.from_flags(), "10.15")[0] != problems[0]  # opset 21 is fine in 10.15


def test_a_folder_without_graphs_is_refused(tmp_path):
    with pytest.raises(UserError, match="holds no .onnx graph"):
        check_export(tmp_path, ShapeRanges.from_flags())
