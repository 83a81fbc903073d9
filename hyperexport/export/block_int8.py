"""int8 weights in blocks (ONNX Runtime's `MatMulNBits`, 8 bits) for the decode step and the tied embedding.

A decode step multiplies a few rows of activations by every decoder weight: ONNX Runtime's dynamic int8
GEMM (`DynamicQuantizeMatMul`) ran it ~20% slower at batch 1 than `MatMulNBits` with 8-bit weights in
blocks of up to 512 along the input dimension, one scale per block and output column (symmetric: stored
as uint8 with a zero point of 128), activations quantized per block at run time (`accuracy_level` 4);
weights under `MIN_VALUES` values (adapters) stay fp32.
The tied embedding uses the same format, one set of bytes for both readers:
- `TABLE_U8` [V, d]: the rows, which lookups gather, subtract 128 from and scale by their blocks' scales;
- the same bytes as [V, d / block, block] (`TABLE_BLOCKS`): the LM head's `MatMulNBits` weight (N = V).
`export.weights` writes bytes once whatever shape names them. An ONNX Runtime artifact, like all int8.
"""

from __future__ import annotations

import numpy as np

from hyperexport.export.tied_embedding import TIED_TABLE

BITS, ZERO_POINT, ACCURACY_LEVEL = 8, 128, 4  # accuracy level 4: int8 arithmetic
MIN_BLOCK, MAX_BLOCK = 16, 512
# Smaller weights (an adapter's 512 x 64) stay fp32: int8 saves next to nothing on them, and the batch-8
# t5-small decode step ran ~19% faster with its 24 adapter matrices fp32 than in MatMulNBits.
MIN_VALUES = 1 << 16
TABLE_U8, TABLE_BLOCKS = f"{TIED_TABLE}.u8", f"{TIED_TABLE}.blocks"
TABLE_SCALES, TABLE_BLOCK_SCALES = f"{TIED_TABLE}.scales", f"{TIED_TABLE}.block_scales"
MICROSOFT = "com.microsoft"


def block_size(k: int) -> int | None:
    """The largest power of two up to 512 (at least 16) that divides the input dimension `k`, or None."""
    size = MAX_BLOCK
    while size >= MIN_BLOCK:
        if k % size == 0:
            return size
        size //= 2
    return None


def quantize_rows(rows: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, K] float -> uint8 [N, K / block, block] (value + 128) and scales [N, K / block]."""
    n, k = rows.shape
    blocks = rows.reshape(n, k // block, block)
    scales = np.maximum(np.abs(blocks).max(axis=2), 1e-12) / 127
    codes = np.clip(np.rint(blocks / scales[:, :, None]), -127, 127) + ZERO_POINT
    return codes.astype(np.uint8), scales.astype(np.float32)


def matmuls_to_blocks(graph) -> int:
    """Every MatMul of `graph` whose weight is an fp32 [K, N] initializer of at least `MIN_VALUES` values
    becomes `MatMulNBits` (a block size must divide K); returns how many."""
    from onnx import numpy_helper

    weights = {t.name: t for t in graph.initializer if len(t.dims) == 2 and t.data_type == 1  # 1: float
               and t.dims[0] * t.dims[1] >= MIN_VALUES and block_size(t.dims[0]) is not None}
    nodes, replaced = [], set()
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            nodes.append(node)
            continue
        matrix = numpy_helper.to_array(weights[node.input[1]])  # [K, N]
        k, n = matrix.shape
        block = block_size(k)
        assert block is not None  # `weights` holds only matrices with a block size
        codes, scales = quantize_rows(np.ascontiguousarray(matrix.T), block)
        name = node.input[1]
        graph.initializer.extend([numpy_helper.from_array(codes, f"{name}.u8"),
                                  numpy_helper.from_array(scales.reshape(-1), f"{name}.scales")])
        nodes.append(_matmul_nbits(node, f"{name}.u8", f"{name}.scales", k, n, codes.shape[2]))
        replaced.add(name)
    _replace(graph, nodes, replaced)
    return len(replaced)


def table_to_blocks(graph) -> None:
    """The fp32 `TIED_TABLE` [V, d] becomes `TABLE_U8` rows with block scales; lookups dequantize the
    rows they gather, and the head (MatMul of `Transpose(TIED_TABLE)`) becomes `MatMulNBits`."""
    from onnx import numpy_helper

    table = numpy_helper.to_array(next(t for t in graph.initializer if t.name == TIED_TABLE))  # [V, d]
    block = block_size(table.shape[1])
    if block is None:
        raise ValueError(f"d_model {table.shape[1]} has no block size between {MIN_BLOCK} and {MAX_BLOCK}")
    codes, scales = quantize_rows(table, block)  # [V, nb, block], [V, nb]
    graph.initializer.extend([numpy_helper.from_array(codes.reshape(table.shape), TABLE_U8),
                              numpy_helper.from_array(codes, TABLE_BLOCKS),
                              numpy_helper.from_array(scales, TABLE_SCALES),
                              numpy_helper.from_array(scales.reshape(-1), TABLE_BLOCK_SCALES)])
    heads = {n.output[0] for n in graph.node if n.op_type == "Transpose" and n.input[0] == TIED_TABLE}
    nodes = []
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0] == TIED_TABLE:
            nodes += _lookup(node, *codes.shape[1:])
        elif node.op_type == "MatMul" and node.input[1] in heads:
            nodes.append(_matmul_nbits(node, TABLE_BLOCKS, TABLE_BLOCK_SCALES, table.shape[1], table.shape[0],
                                       codes.shape[2]))
        elif not (node.op_type == "Transpose" and node.input[0] == TIED_TABLE):
            nodes.append(node)
    _replace(graph, nodes, {TIED_TABLE})
    typed = [value for value in graph.value_info if value.name not in heads]
    del graph.value_info[:]
    graph.value_info.extend(typed)


def _matmul_nbits(node, weight: str, scales: str, k: int, n: int, block: int):
    from onnx import helper

    return helper.make_node("MatMulNBits", [node.input[0], weight, scales], list(node.output), name=node.name or
                            node.output[0], domain=MICROSOFT, K=k, N=n, bits=BITS, block_size=block,
                            accuracy_level=ACCURACY_LEVEL)


def _lookup(node, blocks: int, block: int) -> list:
    """Gather(table, ids) [*ids, d]: (Gather(u8 rows) - 128), in blocks, times Gather(block scales, ids)."""
    from onnx import helper

    ids, out = node.input[1], node.output[0]

    def name(step: str) -> str:
        return f"{out}/{step}"

    def constant(step: str, values, kind: int):
        return helper.make_node("Constant", [], [name(step)], name=name(step),
                                value=helper.make_tensor(name(step), kind, [len(values)], values))

    return [helper.make_node("Gather", [TABLE_U8, ids], [name("u8")], name=name("u8")),  # [*ids, d]
            helper.make_node("Cast", [name("u8")], [name("float")], name=name("float"), to=1),
            constant("zero", [float(ZERO_POINT)], 1), constant("blocked", [0, blocks, block], 7),
            helper.make_node("Sub", [name("float"), name("zero")], [name("centred")], name=name("centred")),
            helper.make_node("Shape", [name("u8")], [name("shape")], name=name("shape")),
            helper.make_node("Flatten", [name("centred")], [name("rows")], name=name("rows"), axis=-1),  # [N, d]
            helper.make_node("Reshape", [name("rows"), name("blocked")], [name("blocks")], name=name("blocks")),
            constant("flat", [-1], 7),
            helper.make_node("Reshape", [ids, name("flat")], [name("ids")], name=name("ids")),  # [N]
            helper.make_node("Gather", [TABLE_SCALES, name("ids")], [name("scales")], name=name("scales")),  # [N, nb]
            helper.make_node("Unsqueeze", [name("scales"), name("last")], [name("scales3")], name=name("scales3")),
            constant("last", [-1], 7),
            helper.make_node("Mul", [name("blocks"), name("scales3")], [name("scaled")], name=name("scaled")),
            helper.make_node("Reshape", [name("scaled"), name("shape")], [out], name=out)]  # [*ids, d]


def _replace(graph, nodes: list, dropped: set[str]) -> None:
    del graph.node[:]
    graph.node.extend(_topological(nodes))
    kept = [t for t in graph.initializer if t.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _topological(nodes: list) -> list:
    """Constants first (the lookup's `last` axis comes after its use), then the rest in order."""
    return [n for n in nodes if n.op_type == "Constant" and not n.input] + \
        [n for n in nodes if not (n.op_type == "Constant" and not n.input)]
