"""One decoder graph for every decoding step (the layout of ONNX Runtime's own T5 tooling).

optimum writes two decoders that each hold every decoder weight: `decoder_model.onnx` for the first step
(it also projects the encoder states into each layer's cross-attention keys/values) and
`decoder_with_past_model.onnx` for the others. Here the encoder graph takes over those projections and
emits `present.{i}.encoder.{key,value}` [B, heads, S, d_kv] beside `last_hidden_state`, and
`decoder_with_past_model.onnx` runs every step, the first one with an empty self-attention past
[B, heads, 0, d_kv] (it also takes T > 1 tokens: teacher-forced logits). `decoder_model.onnx` is removed.
A post-process over an export folder's graphs (the multi-task export calls it too). No `If` node and no
operator outside the default domain is added; TensorRT engines still build from optimum's three graphs.
"""

from __future__ import annotations

from pathlib import Path

from hyperexport.contracts.names import DECODER_GRAPH, ENCODER_GRAPH
from hyperexport.export.weights import save_graph

PRESENT_CROSS = ".encoder."  # present.{i}.encoder.{key,value}: a cross-attention output
ENCODER_STATES, ENCODER_OUTPUT = "encoder_hidden_states", "last_hidden_state"
SHAPE_INITIALIZER = "cross_attention.shape"  # [0, -1, heads, d_kv]: keep the batch, split the heads


def one_decoder(folder: Path) -> None:
    """Move the first-step decoder's cross-attention projections into the encoder graph and remove
    `decoder_model.onnx`; does nothing to a folder without it (the classify head only, or done already)."""
    import onnx
    import onnx.numpy_helper

    folder = Path(folder)
    if not (folder / DECODER_GRAPH).is_file():
        return
    encoder = onnx.load(str(folder / ENCODER_GRAPH))
    first = onnx.load(str(folder / DECODER_GRAPH))
    cross = [value for value in first.graph.output if PRESENT_CROSS in value.name]
    if not cross:
        raise RuntimeError(f"{DECODER_GRAPH} has no present.*{PRESENT_CROSS}* outputs: not an optimum T5 decoder")
    heads, d_kv = (value_dims(cross[0])[i] for i in (1, 3))
    encoder.graph.initializer.append(onnx.numpy_helper.from_array(_shape(heads, d_kv), SHAPE_INITIALIZER))
    for value in cross:
        weight = _projection_weight(first.graph, value.name)
        weight.name = f"cross_attention.{value.name.removeprefix('present.')}.weight"  # e.g. ...0.encoder.key.weight
        encoder.graph.initializer.append(weight)
        encoder.graph.node.extend(_projection_nodes(value.name, weight.name))
        encoder.graph.output.append(value)
    save_graph(encoder, folder / ENCODER_GRAPH)
    (folder / DECODER_GRAPH).unlink()


def value_dims(value) -> list[int | str]:
    """A graph input's or output's dimensions: numbers, or the names of dynamic axes."""
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _shape(heads: int | str, d_kv: int | str):
    import numpy as np

    if not (isinstance(heads, int) and isinstance(d_kv, int)):
        raise RuntimeError("the cross-attention outputs have no static head count and size")
    return np.array([0, -1, heads, d_kv], dtype=np.int64)


def _projection_weight(graph, output: str):
    """The [d_model, heads * d_kv] initializer of the projection behind `output`, which must be
    Transpose(perm 0,2,1,3) <- Reshape <- MatMul(encoder_hidden_states, weight), as T5 exports it."""
    producers = {name: node for node in graph.node for name in node.output}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    transpose = producers.get(output)
    reshape = producers.get(transpose.input[0]) if transpose is not None else None
    matmul = producers.get(reshape.input[0]) if reshape is not None else None
    chain = [node.op_type if node is not None else None for node in (transpose, reshape, matmul)]
    if chain != ["Transpose", "Reshape", "MatMul"] or matmul is None or matmul.input[0] != ENCODER_STATES \
            or matmul.input[1] not in initializers:
        raise RuntimeError(f"{output} is not Transpose(Reshape(MatMul({ENCODER_STATES}, weight))): "
                           "cannot move the cross-attention projections into the encoder")
    weight = type(initializers[matmul.input[1]])()
    weight.CopyFrom(initializers[matmul.input[1]])
    return weight


def _projection_nodes(output: str, weight: str) -> list:
    """[B, S, d] @ [d, heads * d_kv] -> [B, S, heads, d_kv] -> [B, heads, S, d_kv]."""
    from onnx import helper

    projected, split = f"{output}/projected", f"{output}/split"
    return [helper.make_node("MatMul", [ENCODER_OUTPUT, weight], [projected], name=projected),
            helper.make_node("Reshape", [projected, SHAPE_INITIALIZER], [split], name=split),
            helper.make_node("Transpose", [split], [output], name=f"{output}/transpose", perm=[0, 2, 1, 3])]
