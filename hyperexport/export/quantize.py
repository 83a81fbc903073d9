"""int8: an export's graphs with int8 weights, a CPU artifact (ONNX Runtime only).

- The decode step's graph (`decoder_with_past_model.onnx`) and every tied LM head: 8-bit weights in
  blocks (`export.block_int8`, ONNX Runtime's `MatMulNBits`), which ran the batch-1 decode step ~20%
  faster than the dynamic int8 GEMM.
- The other graphs' MatMuls (the encoder, the classify graph: many rows per call): ONNX Runtime's
  dynamic quantization (int8 weights, one scale per tensor, activations quantized at run time).
- The tied embedding (`export.tied_embedding`), which `quantize_dynamic` would leave fp32 (65 MB of a
  284 MB t5-small export): uint8 rows with block scales, one set of bytes read by the lookups and the head.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from hyperexport.contracts.names import DECODER_WITH_PAST_GRAPH
from hyperexport.export.block_int8 import MICROSOFT
from hyperexport.export.tied_embedding import TIED_TABLE

BLOCK_GRAPHS = (DECODER_WITH_PAST_GRAPH,)  # a few rows per call: MatMulNBits beats the dynamic int8 GEMM


def quantize_folder(folder: Path) -> None:
    """int8 weights in every graph of `folder` (see the module doc)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from hyperexport.export.block_int8 import matmuls_to_blocks, table_to_blocks
    from hyperexport.export.tied_embedding import tie_embedding
    from hyperexport.export.weights import save_graph

    tie_embedding(folder)
    for path in sorted(Path(folder).glob("*.onnx")):
        if path.name in BLOCK_GRAPHS:
            model = onnx.load(str(path))
        else:
            graph = onnx.load(str(path), load_external_data=False).graph
            tied = _tied_heads(graph)
            heads = [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in tied]
            quantized = path.with_name(f".{path.name}.int8")
            with _quiet_root_logger():  # its advice to pre-process (shape inference) fits static quantization
                quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul"], nodes_to_exclude=heads)
            model = onnx.load(str(quantized))
            quantized.unlink()
        if any(t.name == TIED_TABLE for t in model.graph.initializer):
            table_to_blocks(model.graph)
        if path.name in BLOCK_GRAPHS:
            matmuls_to_blocks(model.graph)
        if not any(o.domain == MICROSOFT for o in model.opset_import):
            model.opset_import.append(onnx.helper.make_opsetid(MICROSOFT, 1))
        save_graph(model, path)


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
