"""Running an engine folder (`export --format tensorrt`): `TensorRTEngines` runs one plan at a time on
named numpy arrays (torch CUDA tensors as the buffers, `set_input_shape` / `set_tensor_address` /
`execute_async_v3`); `TensorRTRunner` is the `verify` runner over it, of the same shape as
`runners.OnnxRuntimeRunner` (logits, label scores, greedy tokens via `generation.greedy_generate`).

A plan runs only on the TensorRT version and GPU model that built it: before deserializing anything,
the manifest's `tensorrt_version`, `compute_capability` and `gpu_name` are compared with this machine's
(`check_plan_compatible`, pure Python) and a mismatch is a one-line UserError saying how to rebuild.
Inputs outside the engine's optimization profile are refused the same way (`check_in_profile`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from hyperexport.contracts.export import ExportFolder, ExportManifest
from hyperexport.contracts.names import CLASSIFY_GRAPH, GENERATE_GRAPHS
from hyperexport.errors import UserError
from hyperexport.export.tensorrt.build import require_tensorrt
from hyperexport.runtime.generation import greedy_generate
from hyperexport.verify.runners import ParityInputs

_PLAN_FACTS = ("tensorrt_version", "compute_capability", "gpu_name")


def check_plan_compatible(folder: Path, manifest: ExportManifest, current: dict) -> None:
    """Refuse plans built with another TensorRT version or on another GPU model than `current`
    (`tensorrt_build.device_facts`)."""
    different = [fact for fact in _PLAN_FACTS if str(getattr(manifest, fact)) != str(current.get(fact))]
    if different:
        built = f"TensorRT {manifest.tensorrt_version} on {manifest.gpu_name} (sm {manifest.compute_capability})"
        here = f"TensorRT {current.get('tensorrt_version')} on {current.get('gpu_name')} (sm {current.get('compute_capability')})"
        raise UserError(f"{folder} holds plans built with {built}, but this machine has {here}: rebuild them here with "
                        f"`hyperexport export --task {manifest.task} --format tensorrt --overwrite`")


def check_in_profile(graph: str, name: str, shape: tuple[int, ...], profile: dict[str, list[int]]) -> None:
    """Refuse an input shape outside the engine's min..max shapes (one line, naming the flag to change)."""
    low, high = profile["min"], profile["max"]
    if len(shape) != len(low) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high)):
        raise UserError(f"{graph} input {name} has shape {list(shape)}, outside the engine's profile {low}..{high}: "
                        "rebuild with wider --batch / --seq ranges")


def open_engine_folder(export_dir: Path) -> ExportFolder:
    """An engine folder, after the hash check; refuses other formats."""
    export = ExportFolder.open(export_dir)
    if not export.is_engine:
        raise UserError(f"{export_dir} is a {export.manifest.format} export, not TensorRT engines: "
                        "run `hyperexport export --task <task> --format tensorrt`")
    return export


class TensorRTEngines:
    """The plans of an engine folder, deserialized once; `run(graph file, inputs) -> outputs`."""

    def __init__(self, export_dir: Path):
        from hyperexport.export.tensorrt.build import device_facts

        self.export_dir = Path(export_dir)
        self.export = open_engine_folder(self.export_dir)
        self.manifest = self.export.manifest
        self.trt = require_tensorrt()  # these two fail early, before any other runner (verify, bench) has run
        check_plan_compatible(self.export_dir, self.manifest, device_facts(self.trt))
        self.engines: dict = {}

    def __enter__(self) -> "TensorRTEngines":
        trt = self.trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        for graph in self.manifest.profiles or {}:
            engine = runtime.deserialize_cuda_engine(self.export.graph_file(graph).read_bytes())
            if engine is None:
                raise UserError(f"TensorRT could not load {self.export.graph_file(graph)}: rebuild the engines")
            self.engines[graph] = (engine, engine.create_execution_context())
        return self

    def __exit__(self, *exc) -> None:
        self.engines = {}

    @property
    def max_batch(self) -> int:
        return self.manifest.max_batch or 1

    def has(self, graph: str) -> bool:
        return graph in (self.manifest.profiles or {})

    def _torch_dtype(self, dtype):
        import torch

        names = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
                 "INT64": torch.int64, "BOOL": torch.bool, "INT8": torch.int8, "UINT8": torch.uint8}
        for name, torch_dtype in names.items():
            if dtype == getattr(self.trt.DataType, name, None):
                return torch_dtype
        raise UserError(f"engine tensor type {dtype} is not supported by the runner")

    def run(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        engine, context = self.engines[graph]
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT for n in names}
        buffers = {}  # kept alive until the stream is done
        for name in (n for n in names if is_input[n]):
            if name not in inputs:
                raise UserError(f"{graph} needs input {name}")
            tensor = torch.as_tensor(np.ascontiguousarray(inputs[name]))
            check_in_profile(graph, name, tuple(tensor.shape), (self.manifest.profiles or {})[graph][name])
            buffers[name] = tensor.to(device="cuda", dtype=self._torch_dtype(engine.get_tensor_dtype(name))).contiguous()
            context.set_input_shape(name, tuple(buffers[name].shape))
        for name in (n for n in names if not is_input[n]):
            shape = tuple(context.get_tensor_shape(name))
            buffers[name] = torch.empty(shape, dtype=self._torch_dtype(engine.get_tensor_dtype(name)), device="cuda")
        for name, tensor in buffers.items():
            context.set_tensor_address(name, tensor.data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {graph} failed")
        stream.synchronize()
        return {name: _to_numpy(buffers[name]) for name in names if not is_input[name]}

    def infer(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run(graph, inputs)

    def graph_infer(self):
        """`generation.GraphInfer` over the generate plans."""
        return lambda graph, inputs: self.run(GENERATE_GRAPHS[graph], inputs)


def _to_numpy(tensor) -> np.ndarray:
    import torch

    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).cpu().numpy()


def infer_in_chunks(infer: Callable[[ParityInputs], dict[str, np.ndarray]], inputs: ParityInputs, step: int,
                    pad_token_id: int) -> dict[str, np.ndarray]:
    """`infer` on slices of at most `step` rows, joined along the batch; generated tokens of chunks that
    stopped at different lengths are padded with `pad_token_id`, as `generate()` pads a batch."""
    chunks = [infer(ParityInputs(inputs.input_ids[i:i + step], inputs.attention_mask[i:i + step],
                                 inputs.decoder_input_ids[i:i + step], inputs.label_ids, inputs.max_new_tokens))
              for i in range(0, inputs.input_ids.shape[0], step)]
    merged = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0] if name != "tokens"}
    if "tokens" in chunks[0]:
        width = max(chunk["tokens"].shape[1] for chunk in chunks)
        merged["tokens"] = np.concatenate([np.pad(chunk["tokens"], ((0, 0), (0, width - chunk["tokens"].shape[1])),
                                                  constant_values=pad_token_id) for chunk in chunks])
    return merged


class TensorRTRunner:
    """`verify`'s runner over an engine folder: whichever heads it holds."""

    name = "tensorrt"

    def __init__(self, export_dir: Path, classify_file: str):
        self.export_dir, self.classify_file = Path(export_dir), classify_file
        self.engines = TensorRTEngines(export_dir)
        export = self.engines.export
        self.ids = export.generation_ids if export.has(GENERATE_GRAPHS["encoder"]) else None

    def __enter__(self) -> "TensorRTRunner":
        self.engines.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.engines.__exit__(*exc)

    def infer(self, inputs: ParityInputs) -> dict[str, np.ndarray]:
        """The outputs for the whole batch, run in chunks of at most the profile's max batch."""
        return infer_in_chunks(self._infer, inputs, self.engines.max_batch, self.ids.pad_token_id if self.ids else 0)

    def _infer(self, inputs: ParityInputs) -> dict[str, np.ndarray]:
        feeds = {"input_ids": inputs.input_ids.numpy(), "attention_mask": inputs.attention_mask.numpy()}
        outputs = {}
        if self.engines.has(self.classify_file):
            outputs["scores"] = self.engines.run(self.classify_file, feeds)["scores"]
        if self.engines.has(GENERATE_GRAPHS["decoder"]):
            hidden = self.engines.run(GENERATE_GRAPHS["encoder"], feeds)["last_hidden_state"]
            outputs["logits"] = self.engines.run(GENERATE_GRAPHS["decoder"], {
                "input_ids": inputs.decoder_input_ids.numpy(), "encoder_hidden_states": hidden,
                "encoder_attention_mask": feeds["attention_mask"]})["logits"]
            assert self.ids is not None  # the encoder plan comes with the generate head's config
            outputs["tokens"] = greedy_generate(
                self.engines.graph_infer(), feeds["input_ids"], feeds["attention_mask"], inputs.max_new_tokens,
                self.ids.decoder_start_token_id, self.ids.eos_token_id, self.ids.pad_token_id)
        return outputs


def bench_functions(engines: TensorRTEngines, task: str, new_tokens: int) -> dict[str, Callable]:
    """`bench`'s callables over open engines: {"classify": fn, "generate": fn}, each
    fn(input_ids, attention_mask) on torch tensors; generation makes exactly `new_tokens` tokens."""
    if engines.manifest.task != task:
        raise UserError(f"{engines.export_dir} holds engines of task {engines.manifest.task}, not {task}")
    ids = engines.export.generation_ids if engines.has(GENERATE_GRAPHS["encoder"]) else None

    def classify(input_ids, attention_mask):
        return engines.run(CLASSIFY_GRAPH, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})

    def generate(input_ids, attention_mask):
        return greedy_generate(engines.graph_infer(), input_ids.numpy(), attention_mask.numpy(), new_tokens,
                               ids.decoder_start_token_id, ids.eos_token_id, ids.pad_token_id,
                               min_new_tokens=new_tokens)

    return {head: fn for head, fn, graph in (("classify", classify, CLASSIFY_GRAPH),
                                             ("generate", generate, GENERATE_GRAPHS["encoder"])) if engines.has(graph)}


TensorRTBackend = TensorRTEngines
