"""int8: ONNX Runtime's dynamic quantization of an export's graphs (weights int8, activations quantized
at run time), a CPU artifact, and int8 for the tied embedding too.

ONNX Runtime's `quantize_dynamic` quantizes MatMul weights (one scale per tensor) and leaves lookup
tables fp32: for t5-small that left 16.4M fp32 parameters, 65 MB of a 284 MB export. Here the tied
embedding (`export.tied_embedding`: `TIED_TABLE` [V, d], the head a Transpose of it) becomes int8 rows
with one scale per row (per vocabulary entry), read by both of its users:
- lookups: Gather(int8 rows) -> float -> times each token's scale;
- the LM head: DynamicQuantizeLinear(x) -> MatMulInteger(x, Transpose(int8 rows)) -> float -> times x's
  scale and each column's scale (standard operators; ONNX Runtime folds the transpose once at load and
  fuses the rest into one int8 GEMM).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from hyperexport.export.tied_embedding import TIED_TABLE

INT8_TABLE, TABLE_SCALE = f"{TIED_TABLE}.int8", f"{TIED_TABLE}.scale"


def quantize_folder(folder: Path) -> None:
    """Dynamic int8 quantization of every graph's MatMuls and of the tied embedding."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from hyperexport.export.tied_embedding import tie_embedding
    from hyperexport.export.weights import save_graph

    tie_embedding(folder)
    for path in sorted(Path(folder).glob("*.onnx")):
        graph = onnx.load(str(path), load_external_data=False).graph
        heads = [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in _tied_heads(graph)]
        quantized = path.with_name(f".{path.name}.int8")
        with _quiet_root_logger():  # its advice to pre-process (shape inference) fits static quantization
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                             nodes_to_exclude=heads)
        model = onnx.load(str(quantized))
        if any(t.name == TIED_TABLE for t in model.graph.initializer):
            quantize_table(model.graph)
        save_graph(model, path)
        quantized.unlink()


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _tied_heads(graph) -> set[str]:
    """The outputs of `Transpose(TIED_TABLE)`: the LM head's weight."""
    return {node.output[0] for node in graph.node if node.op_type == "Transpose" and node.input[0] == TIED_TABLE}


def quantize_table(graph) -> None:
    """Replace the fp32 `TIED_TABLE` [V, d] by int8 rows and per-row scales, rewriting its readers."""
    import numpy as np
    from onnx import numpy_helper

    tensor = next(t for t in graph.initializer if t.name == TIED_TABLE)
    table = numpy_helper.to_array(tensor)  # [V, d]
    scale = np.maximum(np.abs(table).max(axis=1), 1e-12) / 127  # [V]
    rows = np.clip(np.rint(table / scale[:, None]), -127, 127).astype(np.int8)
    kept = [t for t in graph.initializer if t.name != TIED_TABLE]
    del graph.initializer[:]
    graph.initializer.extend([*kept, numpy_helper.from_array(rows, INT8_TABLE),
                              numpy_helper.from_array(scale.astype(np.float32), TABLE_SCALE)])
    heads = _tied_heads(graph)
    typed = [value for value in graph.value_info if value.name not in heads]  # the heads become int8
    del graph.value_info[:]
    graph.value_info.extend(typed)
    nodes = []
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0] == TIED_TABLE:
            nodes += _lookup(node)
        elif node.op_type == "Transpose" and node.input[0] == TIED_TABLE:
            node.input[0] = INT8_TABLE
            nodes.append(node)
        elif node.op_type == "MatMul" and node.input[1] in heads:
            nodes += _head(node)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _lookup(node) -> list:
    """Gather(table, ids) [*ids, d] from int8 rows: Cast(Gather(int8)) * Unsqueeze(Gather(scale, ids), -1)."""
    from onnx import helper

    ids, out = node.input[1], node.output[0]
    axes = helper.make_tensor(f"{out}/last", 7, [1], [-1])  # 7: int64
    return [helper.make_node("Gather", [INT8_TABLE, ids], [f"{out}/int8"], name=f"{out}/int8"),
            helper.make_node("Cast", [f"{out}/int8"], [f"{out}/float"], name=f"{out}/float", to=1),
            helper.make_node("Gather", [TABLE_SCALE, ids], [f"{out}/scale"], name=f"{out}/scale"),
            helper.make_node("Constant", [], [f"{out}/last"], name=f"{out}/last", value=axes),
            helper.make_node("Unsqueeze", [f"{out}/scale", f"{out}/last"], [f"{out}/scales"], name=f"{out}/scales"),
            helper.make_node("Mul", [f"{out}/float", f"{out}/scales"], [out], name=out)]


def _head(node) -> list:
    """MatMul(x, head) [..., V] with int8 x (quantized at run time) and the int8 table's columns."""
    from onnx import helper

    x, head, out = node.input[0], node.input[1], node.output[0]

    def name(step: str) -> str:
        return f"{out}/{step}"

    return [helper.make_node("DynamicQuantizeLinear", [x], [name("x"), name("x_scale"), name("x_zero")],
                             name=name("x")),
            helper.make_node("MatMulInteger", [name("x"), head, name("x_zero")], [name("int32")], name=name("int32")),
            helper.make_node("Cast", [name("int32")], [name("float")], name=name("float"), to=1),
            helper.make_node("Mul", [name("x_scale"), TABLE_SCALE], [name("scale")], name=name("scale")),
            helper.make_node("Mul", [name("float"), name("scale")], [out], name=out)]
