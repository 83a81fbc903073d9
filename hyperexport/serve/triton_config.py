"""Triton's `config.pbtxt` for one graph: a `ModelConfig` protobuf message built from the export's io spec.

`model_config(...)` builds Triton's own message (`tritonclient.grpc.model_config_pb2`; a misspelt field
or enum value fails when it is set): `platform` (`tensorrt_plan` or `onnxruntime_onnx`), `max_batch_size` =
the profile's max batch (every tensor's first axis is `batch_size`, so Triton's `dims` leave it out),
inputs and outputs with Triton data types and dims (-1 for a named axis), dynamic batching, and for
plans one GPU instance on optimization profile 0. `config_text` prints it with protobuf's text format.
`check_model_config(...)` compares a message's names, data types and dims with the io spec: the
semantic part that the protobuf schema cannot check. `python_model_config(...)` is the message of a model
`serve` runs on Triton's Python backend (`serve.interfaces`: its tensors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperexport.contracts.names import TRITON_MODEL_FILES
from hyperexport.errors import UserError

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

    from hyperexport.contracts.export import GraphIo, TensorSpec
    from hyperexport.serve.interfaces import Interface

PLATFORMS = {"tensorrt": "tensorrt_plan", "onnx": "onnxruntime_onnx"}
PYTHON_BACKEND = "python"
BATCH_AXIS = "batch_size"
PLAN_PROFILE = "0"  # a plan's single optimization profile
TRITON_DTYPES = {"float": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "double": "TYPE_FP64",
                 "int64": "TYPE_INT64", "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8",
                 "bool": "TYPE_BOOL"}
_GET_TRITONCLIENT = "pip install 'tritonclient[grpc]' (or pip install -e '.[deploy]')"


def model_config_pb2():
    """Triton's `model_config_pb2` module, or a one-line UserError naming how to get it."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UserError(f"writing Triton configs needs tritonclient: {_GET_TRITONCLIENT}") from None
    return model_config_pb2


def triton_dims(shape: tuple[int | str, ...], where: str) -> list[int]:
    """The dims Triton wants with max_batch_size > 0: the batch axis left out, named axes -1; a tensor of
    the batch axis only (a multi-task graph's `task_ids`) is [1], reshaped to [] for the model."""
    if not shape or shape[0] != BATCH_AXIS:
        raise UserError(f"{where} has no leading batch_size axis (shape {shape}): Triton cannot batch it")
    return [dim if isinstance(dim, int) and dim > 0 else -1 for dim in shape[1:]] or [1]


def triton_dtype(spec: TensorSpec, where: str) -> str:
    """The name of Triton's `DataType` for an io-spec element type (`float` -> `TYPE_FP32`)."""
    if spec.dtype not in TRITON_DTYPES:
        raise UserError(f"{where} has element type {spec.dtype}, which Triton has no type for")
    return TRITON_DTYPES[spec.dtype]


def model_config(model_name: str, graph_spec: GraphIo, graph: str, fmt: str, max_batch_size: int) -> ModelConfig:
    """Triton's `ModelConfig` for `graph` (its io-spec entry `graph_spec`) served as `model_name`."""
    if fmt not in PLATFORMS:
        raise UserError(f"unknown format '{fmt}': use tensorrt or onnx")
    pb2 = model_config_pb2()
    config = pb2.ModelConfig(name=model_name, platform=PLATFORMS[fmt], max_batch_size=max_batch_size,
                             default_model_filename=TRITON_MODEL_FILES[fmt])
    for kind, declared, specs in (("input", config.input, graph_spec.inputs),
                                  ("output", config.output, graph_spec.outputs)):
        for spec in specs:
            where = f"{graph} {kind} {spec.name}"
            tensor = declared.add(name=spec.name, data_type=pb2.DataType.Value(triton_dtype(spec, where)),
                                  dims=triton_dims(spec.shape, where))
            if len(spec.shape) == 1:  # [batch] (task_ids): declared [1], reshaped to [] for the model
                tensor.reshape.SetInParent()
    config.dynamic_batching.SetInParent()  # present and empty: Triton's defaults
    if fmt == "tensorrt":
        config.instance_group.add(kind=pb2.ModelInstanceGroup.KIND_GPU, count=1, profile=[PLAN_PROFILE])
    return config


def python_model_config(model_name: str, interface: Interface, max_batch_size: int, max_queue_delay_us: int,
                        instances: int, parameters: dict[str, str]) -> ModelConfig:
    """Triton's `ModelConfig` of a model `serve` runs on the Python backend: the interface's tensors, dynamic
    batching, `instances` CPU instances (processes), and `parameters` (string values) for its model.py."""
    pb2 = model_config_pb2()
    config = pb2.ModelConfig(name=model_name, backend=PYTHON_BACKEND, max_batch_size=max_batch_size)
    for declared, tensors in ((config.input, interface.inputs), (config.output, interface.outputs)):
        for tensor in tensors:
            declared.add(name=tensor.name, data_type=pb2.DataType.Value(tensor.data_type), dims=list(tensor.dims))
    for declared, tensor in zip(config.input, interface.inputs):
        declared.optional, declared.allow_ragged_batch = tensor.optional, tensor.ragged
    config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    config.dynamic_batching.SetInParent()  # present even with every field at its default
    config.instance_group.add(kind=pb2.ModelInstanceGroup.KIND_CPU, count=instances)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def config_text(config: ModelConfig) -> str:
    """config.pbtxt: the message in protobuf's text format, which Triton reads."""
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def check_model_config(config: ModelConfig, model_name: str, graph_spec: GraphIo, graph: str, fmt: str,
                       max_batch_size: int) -> list[str]:
    """Problems of a `ModelConfig` against the io spec (empty list: it matches)."""
    pb2 = model_config_pb2()
    problems = []
    if config.name != model_name:
        problems.append(f"name is {config.name!r}, not {model_name!r}")
    if config.platform != PLATFORMS[fmt]:
        problems.append(f"platform is {config.platform!r}, not {PLATFORMS[fmt]!r}")
    if config.max_batch_size != max_batch_size:
        problems.append(f"max_batch_size is {config.max_batch_size}, not {max_batch_size}")
    if config.default_model_filename != TRITON_MODEL_FILES[fmt]:
        problems.append(f"default_model_filename is {config.default_model_filename!r}, not {TRITON_MODEL_FILES[fmt]!r}")
    if not config.HasField("dynamic_batching"):
        problems.append("dynamic_batching is off")
    plan_groups = [(pb2.ModelInstanceGroup.KIND_GPU, [PLAN_PROFILE])] if fmt == "tensorrt" else []
    if [(group.kind, list(group.profile)) for group in config.instance_group] != plan_groups:
        problems.append("instance_group is not one GPU instance on the plan's profile 0" if plan_groups
                        else "instance_group is set: ONNX models take Triton's default instances")
    for kind, declared, specs in (("input", config.input, graph_spec.inputs),
                                  ("output", config.output, graph_spec.outputs)):
        if [t.name for t in declared] != [s.name for s in specs]:
            problems.append(f"{kind} names {[t.name for t in declared]} differ from the graph's "
                            f"{[s.name for s in specs]}")
            continue
        for tensor, spec in zip(declared, specs):
            dtype = pb2.DataType.Name(tensor.data_type)
            if dtype != TRITON_DTYPES.get(spec.dtype):
                problems.append(f"{kind} {tensor.name} is {dtype}, the graph's is {spec.dtype}")
            if list(tensor.dims) != triton_dims(spec.shape, f"{graph} {kind} {tensor.name}"):
                problems.append(f"{kind} {tensor.name} has dims {list(tensor.dims)}, "
                                f"the graph's shape is {list(spec.shape)}")
            if len(spec.shape) == 1 and (not tensor.HasField("reshape") or list(tensor.reshape.shape)):
                problems.append(f"{kind} {tensor.name} is [batch] in the graph: it needs reshape {{ shape: [ ] }}")
    return problems
