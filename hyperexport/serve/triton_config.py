"""Triton `config.pbtxt` for one graph, written from the export's io spec, and checked back.

`model_config(...)` writes the text: `platform` (`tensorrt_plan` or `onnxruntime_onnx`),
`max_batch_size` = the profile's max batch (every tensor's first axis is `batch_size`, so Triton's
`dims` leave it out), inputs and outputs with Triton data types and dims (-1 for a named axis), dynamic
batching, and for plans one GPU instance on optimization profile 0. `check_model_config(...)` parses
the text with Triton's own `ModelConfig` protobuf (tritonclient, `text_format.Parse`: unknown fields and
bad enums fail) and compares names, data types and dims with the io spec: the semantic part that the
protobuf cannot check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperexport.contracts.names import TRITON_MODEL_FILES
from hyperexport.errors import UserError

if TYPE_CHECKING:
    from hyperexport.contracts.export import GraphIo, TensorSpec

PLATFORMS = {"tensorrt": "tensorrt_plan", "onnx": "onnxruntime_onnx"}
BATCH_AXIS = "batch_size"
TRITON_DTYPES = {"float": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "double": "TYPE_FP64",
                 "int64": "TYPE_INT64", "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8",
                 "bool": "TYPE_BOOL"}
_GET_TRITONCLIENT = "pip install 'tritonclient[grpc]' (or pip install -e '.[deploy]')"


def triton_dims(shape: tuple[int | str, ...], where: str) -> list[int]:
    """The dims Triton wants with max_batch_size > 0: the batch axis left out, named axes -1; a tensor of
    the batch axis only (a multi-task graph's `task_ids`) is [1], reshaped to [] for the model."""
    if not shape or shape[0] != BATCH_AXIS:
        raise UserError(f"{where} has no leading batch_size axis (shape {shape}): Triton cannot batch it")
    return [dim if isinstance(dim, int) and dim > 0 else -1 for dim in shape[1:]] or [1]


def _dtype(spec: TensorSpec, where: str) -> str:
    if spec.dtype not in TRITON_DTYPES:
        raise UserError(f"{where} has element type {spec.dtype}, which Triton has no type for")
    return TRITON_DTYPES[spec.dtype]


def _tensors(kind: str, specs: tuple[TensorSpec, ...], graph: str) -> str:
    rows = []
    for spec in specs:
        where = f"{graph} {kind} {spec.name}"
        dims = ", ".join(str(d) for d in triton_dims(spec.shape, where))
        reshape = "\n    reshape: { shape: [ ] }" if len(spec.shape) == 1 else ""  # [batch]: sent as [batch, 1]
        rows.append(f'  {{\n    name: "{spec.name}"\n    data_type: {_dtype(spec, where)}\n    dims: [ {dims} ]{reshape}\n  }}')
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def model_config(model_name: str, graph_spec: GraphIo, graph: str, fmt: str, max_batch_size: int) -> str:
    """config.pbtxt text for `graph` (its io-spec entry `graph_spec`) served as `model_name`."""
    if fmt not in PLATFORMS:
        raise UserError(f"unknown format '{fmt}': use tensorrt or onnx")
    text = (f'name: "{model_name}"\nplatform: "{PLATFORMS[fmt]}"\nmax_batch_size: {max_batch_size}\n'
            f'default_model_filename: "{TRITON_MODEL_FILES[fmt]}"\n'
            + _tensors("input", graph_spec.inputs, graph) + _tensors("output", graph_spec.outputs, graph)
            + "dynamic_batching { }\n")
    if fmt == "tensorrt":  # the plan's single optimization profile (index 0)
        text += 'instance_group [\n  {\n    kind: KIND_GPU\n    count: 1\n    profile: [ "0" ]\n  }\n]\n'
    return text


def parse_model_config(text: str):
    """Triton's `ModelConfig` message from config.pbtxt text (unknown fields or values raise)."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UserError(f"checking Triton configs needs tritonclient: {_GET_TRITONCLIENT}") from None
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def check_model_config(text: str, model_name: str, graph_spec: GraphIo, graph: str, fmt: str,
                       max_batch_size: int) -> list[str]:
    """Problems of config.pbtxt `text` against the io spec (empty list: it matches)."""
    config = parse_model_config(text)  # first: a clear error when tritonclient is missing
    from tritonclient.grpc import model_config_pb2

    problems = []
    if config.name != model_name:
        problems.append(f"name is {config.name!r}, not {model_name!r}")
    if config.platform != PLATFORMS[fmt]:
        problems.append(f"platform is {config.platform!r}, not {PLATFORMS[fmt]!r}")
    if config.max_batch_size != max_batch_size:
        problems.append(f"max_batch_size is {config.max_batch_size}, not {max_batch_size}")
    for kind, declared, specs in (("input", config.input, graph_spec.inputs),
                                  ("output", config.output, graph_spec.outputs)):
        if [t.name for t in declared] != [s.name for s in specs]:
            problems.append(f"{kind} names {[t.name for t in declared]} differ from the graph's {[s.name for s in specs]}")
            continue
        for tensor, spec in zip(declared, specs):
            dtype = model_config_pb2.DataType.Name(tensor.data_type)
            if dtype != TRITON_DTYPES.get(spec.dtype):
                problems.append(f"{kind} {tensor.name} is {dtype}, the graph's is {spec.dtype}")
            if list(tensor.dims) != triton_dims(spec.shape, f"{graph} {kind} {tensor.name}"):
                problems.append(f"{kind} {tensor.name} has dims {list(tensor.dims)}, the graph's shape is {list(spec.shape)}")
            if len(spec.shape) == 1 and (not tensor.HasField("reshape") or list(tensor.reshape.shape)):
                problems.append(f"{kind} {tensor.name} is [batch] in the graph: it needs reshape {{ shape: [ ] }}")
    return problems
