"""`export --generate-graph`: `generate_model.onnx`, the whole greedy loop in one graph, so that a client
makes one call per request: ONNX Runtime's `BeamSearch` operator (com.microsoft, `model_type` 1: T5) with
one beam, which is greedy decoding (ONNX Runtime's CPU `GreedySearch` takes GPT-2 models only), holding
the export's own encoder and one-decoder graphs as its subgraphs (`export.one_decoder`).

    input_ids, attention_mask [B, S] int32, max_length, min_length [1] int32 (both counting the start
    token)  ->  sequences [B, <= max_length] int32 (the start token first)

The operator fixes its subgraphs' names and types: the encoder takes `encoder_input_ids` and
`encoder_attention_mask` (int32) and returns `present_key_cross_{i}`, `present_value_cross_{i}`; the
decoder takes `input_ids` [B, 1], `encoder_attention_mask`, every `past_key_self_{i}`/`past_value_self_{i}`,
then every cross pair, and returns `logits` and the `present_*_self_{i}`. Casts to int64 lead into the
graphs as exported. An ONNX Runtime artifact: TensorRT cannot run the operator (the compatibility check
skips this file, and engines are built from the separate graphs).
"""

from __future__ import annotations

from pathlib import Path

from hyperexport.contracts.export import GenerationIds
from hyperexport.contracts.names import DECODER_WITH_PAST_GRAPH, ENCODER_GRAPH, GENERATE_MODEL_GRAPH
from hyperexport.errors import UserError

MICROSOFT = "com.microsoft"
T5_MODEL_TYPE = 1
INT32, INT64, FLOAT = 6, 7, 1  # onnx.TensorProto element types


def add_generate_graph(folder: Path) -> Path:
    """Write `generate_model.onnx` beside the one-decoder graphs of `folder`; returns its path."""
    import onnx
    from onnx import helper

    folder = Path(folder)
    encoder = onnx.load(str(folder / ENCODER_GRAPH)).graph
    decoder = onnx.load(str(folder / DECODER_WITH_PAST_GRAPH)).graph
    extra = [value.name for value in encoder.input if value.name not in ("input_ids", "attention_mask")]
    if extra:
        raise UserError(f"--generate-graph takes an encoder of input_ids and attention_mask; this one also takes "
                        f"{', '.join(extra)} (a multi-task export): export without --generate-graph")
    ids = GenerationIds.read(folder)
    constants = {"num_beams": (INT32, 1), "num_return_sequences": (INT32, 1), "length_penalty": (FLOAT, 1.0),
                 "repetition_penalty": (FLOAT, 1.0)}
    node = helper.make_node(
        "BeamSearch", ["input_ids", "max_length", "min_length", *constants, "", "", "attention_mask"],
        ["beams"], name="greedy_search", domain=MICROSOFT, model_type=T5_MODEL_TYPE, early_stopping=0,
        decoder_start_token_id=ids.decoder_start_token_id, eos_token_id=ids.eos_token_id,
        pad_token_id=ids.pad_token_id, no_repeat_ngram_size=0,
        encoder=_encoder_subgraph(encoder), decoder=_decoder_subgraph(decoder))
    one = helper.make_tensor("one_beam", INT64, [1], [1])
    squeeze = helper.make_node("Squeeze", ["beams", "one_beam"], ["sequences"], name="one_beam")  # [B, 1, L] -> [B, L]
    tensor = helper.make_tensor_value_info
    graph = helper.make_graph(
        [node, squeeze], "greedy_search",
        [tensor("input_ids", INT32, ["batch_size", "sequence_length"]), tensor("max_length", INT32, [1]),
         tensor("min_length", INT32, [1]), tensor("attention_mask", INT32, ["batch_size", "sequence_length"])],
        [tensor("sequences", INT32, ["batch_size", "max_length"])],
        [one, *(helper.make_tensor(name, kind, [1], [value]) for name, (kind, value) in constants.items())])
    opsets = [helper.make_opsetid(o.domain, o.version) for o in onnx.load(str(folder / ENCODER_GRAPH),
                                                                          load_external_data=False).opset_import]
    model = helper.make_model(graph, opset_imports=[*opsets, helper.make_opsetid(MICROSOFT, 1)],
                              producer_name="hyperexport")
    path = folder / GENERATE_MODEL_GRAPH
    from hyperexport.export.weights import save_graph

    save_graph(model, path)
    return path


def _encoder_subgraph(graph):
    """The encoder with int32 inputs, only the cross-attention outputs, named as GreedySearch wants."""
    layers = _layers(graph.output, "present.")
    renamed = {f"present.{i}.encoder.{kind}": f"present_{kind}_cross_{i}" for i in layers for kind in ("key", "value")}
    _rename(graph, renamed)
    _int32_inputs(graph, {"input_ids": "encoder_input_ids", "attention_mask": "encoder_attention_mask"})
    outputs = {value.name: value for value in graph.output}
    del graph.output[:]
    graph.output.extend(outputs[f"present_{kind}_cross_{i}"] for i in layers for kind in ("key", "value"))
    return graph


def _decoder_subgraph(graph):
    """The one decoder with int32 inputs in GreedySearch's order: ids, mask, self pasts, cross pasts."""
    layers = _layers(graph.input, "past_key_values.")
    names = {}
    for i in layers:
        for kind in ("key", "value"):
            names[f"past_key_values.{i}.decoder.{kind}"] = f"past_{kind}_self_{i}"
            names[f"past_key_values.{i}.encoder.{kind}"] = f"past_{kind}_cross_{i}"
            names[f"present.{i}.decoder.{kind}"] = f"present_{kind}_self_{i}"
    _rename(graph, names)
    _int32_inputs(graph, {"input_ids": "input_ids", "encoder_attention_mask": "encoder_attention_mask"})
    inputs = {value.name: value for value in graph.input}
    order = ["input_ids", "encoder_attention_mask",
             *(f"past_{kind}_{part}_{i}" for part in ("self", "cross") for i in layers for kind in ("key", "value"))]
    del graph.input[:]
    graph.input.extend(inputs[name] for name in order)
    dims = graph.input[0].type.tensor_type.shape.dim  # [B, 1]: GreedySearch then feeds only the newest token
    dims[1].dim_value = 1
    return graph


def _layers(values, prefix: str) -> list[int]:
    return sorted({int(v.name[len(prefix):].split(".")[0]) for v in values if v.name.startswith(prefix)})


def _int32_inputs(graph, names: dict[str, str]) -> None:
    """Graph input `old` (int64) becomes int32 input `new`, cast back to int64 for the nodes that read `old`."""
    from onnx import helper

    for old, new in names.items():
        internal = f"{old}/int64"
        _rename(graph, {old: internal}, inputs=False)
        value = next(v for v in graph.input if v.name == old)
        value.name, value.type.tensor_type.elem_type = new, INT32
        graph.node.insert(0, helper.make_node("Cast", [new], [internal], name=internal, to=INT64))


def _rename(graph, names: dict[str, str], inputs: bool = True) -> None:
    """Rename tensors in node inputs and outputs, graph outputs and (with `inputs`) graph inputs."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = names.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = names.get(name, name)
    for value in [*graph.output, *(graph.input if inputs else [])]:
        value.name = names.get(value.name, value.name)
