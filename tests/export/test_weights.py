"""Each weight stored once, one decoder graph for every step, int8 embeddings, the one-graph generator and
the decode loop's kept past: on the tiny run's exports, against the graphs' own bytes and the greedy loop."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from hyperexport.bench.bandwidth import bound_ms, read_bandwidth
from hyperexport.bench.decode import StepTimer, step_bytes, weight_read_bytes
from hyperexport.bench.variants import NumpyPast
from hyperexport.contracts.export import GenerationIds
from hyperexport.contracts.names import DECODER_WITH_PAST_GRAPH, ENCODER_GRAPH, GENERATE_MODEL_GRAPH, GRAPH_WEIGHTS_FILE
from hyperexport.export.block_int8 import MIN_VALUES, TABLE_BLOCKS, TABLE_U8
from hyperexport.export.onnx import export_onnx
from hyperexport.export.tensorrt.compat import check_export
from hyperexport.export.tensorrt.profiles import ShapeRanges
from hyperexport.export.tied_embedding import TIED_TABLE
from hyperexport.export.weights import ALIGNMENT, PACKED_SUFFIX, initializers, weight_bytes
from hyperexport.runtime.backends import OnnxRuntimeBackend
from hyperexport.runtime.generation import greedy_generate, one_graph_generate
from hyperexport_cli.main import app


@pytest.fixture(scope="module")
def exports(tiny_rte, tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    run = tiny_rte.copy_to(root).run  # these exports record their run beside them
    return {precision: export_onnx(run, task="rte", head="both", precision=precision, generate_graph=True,
                                   output=root / precision) for precision in ("fp32", "int8")}


def graph(folder, name):
    return onnx.load(str(folder / name), load_external_data=False).graph


def places(folder, name) -> dict[str, tuple[str, str]]:
    return {t.name: (entry["offset"], entry["length"]) for t in initializers(graph(folder, name))
            if (entry := {e.key: e.value for e in t.external_data})}


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_each_distinct_tensor_is_written_once_and_every_graph_reads_the_one_file(exports, precision):
    folder = exports[precision]
    assert [p.name for p in folder.iterdir() if p.suffix == ".onnx_data" or p.name.endswith("_data")] == [
        GRAPH_WEIGHTS_FILE]
    distinct = {place for name in (ENCODER_GRAPH, DECODER_WITH_PAST_GRAPH, GENERATE_MODEL_GRAPH, "classify_model.onnx")
                for place in places(folder, name).values()}
    size = (folder / GRAPH_WEIGHTS_FILE).stat().st_size
    assert sum(int(length) for _, length in distinct) <= size <= sum(int(length) for _, length in distinct) + \
        ALIGNMENT * len(distinct)
    assert all(int(offset) % ALIGNMENT == 0 for offset, _ in distinct)
    assert size <= weight_bytes(folder) + ALIGNMENT * len(distinct)  # no tensor twice


def test_the_tied_head_is_a_transpose_of_the_one_table(exports):
    folder = exports["fp32"]
    decoder, encoder = graph(folder, DECODER_WITH_PAST_GRAPH), graph(folder, ENCODER_GRAPH)
    vocab, d_model = next(t.dims for t in decoder.initializer if t.name == TIED_TABLE)
    assert not [t.name for g in (encoder, decoder) for t in g.initializer if list(t.dims) == [d_model, vocab]]
    assert any(n.op_type == "Transpose" and n.input[0] == TIED_TABLE + PACKED_SUFFIX for n in decoder.node)
    decoder_places, encoder_places = places(folder, DECODER_WITH_PAST_GRAPH), places(folder, ENCODER_GRAPH)
    # lookups and the head read the same bytes, in both graphs
    assert encoder_places[TIED_TABLE] == decoder_places[TIED_TABLE] == decoder_places[TIED_TABLE + PACKED_SUFFIX]


def test_int8_quantizes_the_embedding_too_and_the_decode_step_in_blocks(exports):
    folder = exports["int8"]
    for name in (ENCODER_GRAPH, DECODER_WITH_PAST_GRAPH, "classify_model.onnx"):
        tensors = {t.name: t for t in graph(folder, name).initializer}
        assert tensors[TABLE_U8].data_type == onnx.TensorProto.UINT8
        assert TIED_TABLE not in tensors  # no fp32 copy left
    decoder = graph(folder, DECODER_WITH_PAST_GRAPH)
    fp32 = {t.name: t.dims[0] * t.dims[1] for t in decoder.initializer if len(t.dims) == 2}  # only small ones stay fp32
    assert all(fp32[n.input[1]] < MIN_VALUES for n in decoder.node if n.op_type == "MatMul" and n.input[1] in fp32)
    assert any(n.op_type == "MatMulNBits" and n.input[1] == TABLE_BLOCKS for n in decoder.node)  # the head
    decoder_places = places(folder, DECODER_WITH_PAST_GRAPH)
    assert decoder_places[TABLE_U8] == decoder_places[TABLE_BLOCKS]  # rows and head blocks: the same bytes
    # the tiny decoder's matrices are under MIN_VALUES and stay fp32, like the norms; t5-small: 58 MB of 231
    assert weight_bytes(folder) < 0.75 * weight_bytes(exports["fp32"])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_one_graph_generator_and_the_loop_give_the_same_tokens(exports, precision):
    folder = exports[precision]
    ids = GenerationIds.read(folder)
    generator = np.random.default_rng(3)
    input_ids = generator.integers(3, 300, (4, 9))
    mask = np.ones_like(input_ids)
    mask[2, 5:] = 0
    with OnnxRuntimeBackend(folder) as backend:
        for least in (0, 3):
            loop = greedy_generate(backend, input_ids, mask, 4, ids, min_new_tokens=least)
            assert np.array_equal(one_graph_generate(backend, input_ids, mask, 4, ids, min_new_tokens=least), loop)


def test_kept_past_values_and_numpy_ones_decode_alike_and_the_table_is_mapped_once(exports):
    import onnxruntime as ort

    folder = exports["fp32"]
    ids = GenerationIds.read(folder)
    input_ids = np.random.default_rng(4).integers(3, 300, (3, 7))
    with OnnxRuntimeBackend(folder) as backend:
        seen = []
        original = backend.infer_keeping
        backend.infer_keeping = lambda graph, feeds, keep: seen.append(original(graph, feeds, keep)) or seen[-1]
        kept = greedy_generate(backend, input_ids, np.ones_like(input_ids), 5, ids, min_new_tokens=5)
        assert any(isinstance(v, ort.OrtValue) for o in seen for k, v in o.items() if k.startswith("present."))
        shared = backend.shared.initializers
        assert shared(ENCODER_GRAPH)[TIED_TABLE] is shared(DECODER_WITH_PAST_GRAPH)[TIED_TABLE]  # one mapping
        assert TIED_TABLE + PACKED_SUFFIX not in shared(DECODER_WITH_PAST_GRAPH)  # packed by ONNX Runtime
    with OnnxRuntimeBackend(folder) as backend:
        assert np.array_equal(greedy_generate(NumpyPast(backend), input_ids, np.ones_like(input_ids), 5, ids,
                                              min_new_tokens=5), kept)


def test_steps_are_timed_inside_the_loop_and_bounded_by_their_bytes(exports):
    folder = exports["int8"]
    with StepTimer(OnnxRuntimeBackend(folder)) as timed:
        greedy_generate(timed, np.full((2, 6), 5), np.ones((2, 6), dtype=np.int64), 4, GenerationIds.read(folder),
                        min_new_tokens=4)
    assert len(timed.seconds) == 4 and min(timed.seconds) > 0  # every step runs the one decoder graph
    weights = weight_read_bytes(folder / DECODER_WITH_PAST_GRAPH)
    table = next(t for t in graph(folder, DECODER_WITH_PAST_GRAPH).initializer if t.name == TABLE_BLOCKS)
    assert weights >= int(np.prod(table.dims))  # the int8 head is read in full by every step
    assert step_bytes(folder / DECODER_WITH_PAST_GRAPH, 2, 6, 2.0, 2, 4, 8) == weights + 2 * 2 * 4 * 8 * 4 * 2 * 8
    bandwidth = read_bandwidth(threads=2, megabytes=8, rounds=2)
    assert bandwidth > 1e8 and bound_ms(int(bandwidth), bandwidth) == pytest.approx(1e3)


def test_the_tensorrt_check_skips_the_generate_graph_and_export_refuses_it_where_it_cannot_be(exports, tmp_path):
    report = check_export(exports["fp32"], ShapeRanges.from_flags())
    assert report["passed"] and GENERATE_MODEL_GRAPH not in report["graphs"]
    assert "ONNX Runtime artifact" in report["skipped"][GENERATE_MODEL_GRAPH]
    runner = CliRunner()
    refusals = ((["--task", "rte", "--head", "classify"], "--generate-graph needs the generate head"),
                (["--task", "rte", "--format", "tensorrt"], "--generate-graph is an ONNX Runtime graph"),
                (["--tasks", "rte,sst2"], "--generate-graph is an ONNX Runtime graph of one task"),
                (["--task", "rte", "--precision", "bf16"], "--generate-graph needs fp32, fp16 or int8 graphs"))
    for args, message in refusals:
        result = runner.invoke(app, ["export", "--generate-graph", "--output", str(tmp_path / "x"), *args])
        assert result.exit_code == 2 and message in result.stderr and not (tmp_path / "x").exists()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_verify_holds_for_the_one_decoder_export_and_its_one_graph_generator(exports, precision):
    from hyperexport.verify.compare import GENERATE_GRAPH_RUNNER
    from hyperexport.verify.parity import verify

    report = verify(exports[precision], max_examples=16)
    assert report["passed"], [c for c in report["comparisons"] if not c["passed"]]
    assert {c["runner"] for c in report["comparisons"] if c["output"] == "tokens"} >= {"onnxruntime",
                                                                                       GENERATE_GRAPH_RUNNER}


def test_large_weights_go_to_int8_blocks_and_small_ones_stay_fp32():
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from hyperexport.export.block_int8 import block_size, matmuls_to_blocks

    generator = np.random.default_rng(5)
    large, small = (generator.standard_normal(shape).astype(np.float32) for shape in ((512, 256), (256, 64)))
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "large"], ["h"], name="large"), helper.make_node("MatMul", ["h", "small"],
                                                                                           ["y"])],
        "g", [value("x", 1, ["n", 512])], [value("y", 1, ["n", 64])],
        [numpy_helper.from_array(large, "large"), numpy_helper.from_array(small, "small")])
    assert matmuls_to_blocks(graph) == 1 and [n.op_type for n in graph.node] == ["MatMulNBits", "MatMul"]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft",
                                                                                                     1)])
    x = generator.standard_normal((3, 512)).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    expected = x @ large @ small
    assert np.abs(got - expected).max() < 0.02 * np.abs(expected).max()  # 8-bit weights and activations
    assert (block_size(512), block_size(768), block_size(48), block_size(8)) == (512, 256, 16, None)
