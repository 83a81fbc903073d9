"""Running an engine folder (`export --format tensorrt`) through Polygraphy's `TrtRunner`.

`TensorRTBackend` is the `GraphBackend` of an engine folder: one runner per plan, activated (the plan
deserialized, an execution context made) on entering and deactivated on leaving; `infer(graph file,
feeds)` runs one graph on named numpy arrays. `TensorRTRunner` (verify's runner) and `bench_functions`
are thin users of it.

A plan runs only on the TensorRT version and GPU model that built it: before anything is deserialized,
the manifest's `tensorrt_version`, `compute_capability` and `gpu_name` are compared with this machine's
(`check_plan_compatible`, pure Python) and a mismatch is a one-line UserError saying how to rebuild.
Inputs outside the engine's optimization profile are refused the same way (`check_in_profile`); a
batch larger than the profile's runs in chunks (`infer_in_chunks`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hyperexport.contracts.export import ExportFolder, ExportManifest, GenerationIds, GraphIo
from hyperexport.contracts.names import CLASSIFY_GRAPH, ENCODER_GRAPH, GENERATE_GRAPHS, plan_name
from hyperexport.errors import UserError
from hyperexport.export.tensorrt.build import require_tensorrt
from hyperexport.export.tensorrt.compat import ENGINE_IO_DTYPES
from hyperexport.runtime.backends import Feeds, GraphBackend, Outputs
from hyperexport.runtime.generation import GraphInfer, greedy_generate
from hyperexport.verify.runners import ParityInputs

if TYPE_CHECKING:
    import torch
    from polygraphy.backend.trt import TrtRunner

_PLAN_FACTS = ("tensorrt_version", "compute_capability", "gpu_name")


def check_plan_compatible(folder: Path, manifest: ExportManifest, current: dict[str, str]) -> None:
    """Refuse plans built with another TensorRT version or on another GPU model than `current`
    (`build.device_facts`)."""
    different = [fact for fact in _PLAN_FACTS if str(getattr(manifest, fact)) != str(current.get(fact))]
    if different:
        built = f"TensorRT {manifest.tensorrt_version} on {manifest.gpu_name} (sm {manifest.compute_capability})"
        here = f"TensorRT {current.get('tensorrt_version')} on {current.get('gpu_name')} (sm {current.get('compute_capability')})"
        raise UserError(f"{folder} holds plans built with {built}, but this machine has {here}: rebuild them here with "
                        f"`hyperexport export --task {manifest.task} --format tensorrt --overwrite`")


def check_in_profile(graph: str, name: str, shape: tuple[int, ...], profile: Mapping[str, Sequence[int]]) -> None:
    """Refuse an input shape outside the engine's min..max shapes (one line, naming the flag to change)."""
    low, high = list(profile["min"]), list(profile["max"])  # tuples when read from the manifest
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


# ---- numpy in, numpy out ---------------------------------------------------------------------------
def engine_inputs(graph: str, feeds: Feeds, graph_io: GraphIo,
                  profile: Mapping[str, Mapping[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
    """The graph's inputs from `feeds` (others ignored), each checked against the profile, as CPU torch
    tensors of the engine's types: numpy has no bfloat16, and Polygraphy's runner takes torch tensors
    (and then answers in torch tensors)."""
    import torch

    tensors = {}
    for spec in graph_io.inputs:
        if spec.name not in feeds:
            raise UserError(f"{graph} needs input {spec.name}")
        array = np.asarray(feeds[spec.name])
        check_in_profile(graph, spec.name, array.shape, profile[spec.name])
        if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16 (ONNX Runtime's outputs): torch cannot read it
            array = array.astype(np.float32)
        tensors[spec.name] = torch.tensor(array, dtype=getattr(torch, ENGINE_IO_DTYPES[spec.dtype]))
    return tensors


def host_outputs(outputs: Mapping[str, torch.Tensor]) -> Outputs:
    """The runner's CPU torch outputs as numpy arrays of their own (the runner reuses its buffers);
    bfloat16 as float32, which holds every bfloat16 value exactly."""
    import torch

    return {name: (tensor.float() if tensor.dtype == torch.bfloat16 else tensor.clone()).numpy()
            for name, tensor in outputs.items()}


# ---- the backend -----------------------------------------------------------------------------------
class TensorRTBackend:
    """`GraphBackend` over the plans of an engine folder: one Polygraphy `TrtRunner` per plan."""

    def __init__(self, export_dir: str | Path) -> None:
        from hyperexport.export.tensorrt.build import device_facts

        self.export_dir = Path(export_dir)
        self.export = open_engine_folder(self.export_dir)
        self.manifest = self.export.manifest
        self.profiles = self.manifest.profiles or {}  # graph file -> input -> min/opt/max shapes
        tensorrt = require_tensorrt()  # these two fail early, before any other runner (verify, bench) has run
        check_plan_compatible(self.export_dir, self.manifest, device_facts(tensorrt))
        self.io = self.export.io_spec.graphs
        self.runners: dict[str, TrtRunner] = {}  # graph file -> its active runner
        self._active = ExitStack()

    def __enter__(self) -> TensorRTBackend:
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        from hyperexport.export.tensorrt.loaders import polygraphy_failures

        rebuild = f"rebuild them with `hyperexport export --task {self.manifest.task} --format tensorrt --overwrite`"
        runners = {}
        with ExitStack() as activating:  # a plan that fails to load deactivates those loaded before it
            for graph in self.profiles:
                plan = self.export.graph_file(graph)
                runner = TrtRunner(EngineFromBytes(BytesFromPath(str(plan))), name=graph)
                with polygraphy_failures(f"TensorRT could not load {plan}", hint=rebuild):
                    runners[graph] = activating.enter_context(runner)  # deserialized, a context made
            self._active = activating.pop_all()  # every plan loaded: active until __exit__
        self.runners = runners
        return self

    def __exit__(self, *exc: object) -> None:
        self._active.close()
        self.runners = {}

    @property
    def max_batch(self) -> int:
        return self.manifest.max_batch or 1

    def has(self, graph: str) -> bool:
        return graph in self.profiles

    def infer(self, graph: str, feeds: Feeds) -> Outputs:
        if not self.has(graph):
            raise UserError(f"{self.export_dir} has no {plan_name(graph)}: export that head")
        if graph not in self.runners:
            raise RuntimeError(f"{plan_name(graph)} is not loaded: infer inside `with TensorRTBackend(...)`")
        inputs = engine_inputs(graph, feeds, self.io[graph], self.profiles[graph])
        return host_outputs(self.runners[graph].infer(inputs))


class TensorRTEngines(TensorRTBackend):
    """The backend under the names `predict` and `bench` still call (`run`, `graph_infer`); it goes when
    they run on `GraphBackend`."""

    def run(self, graph: str, inputs: Feeds) -> Outputs:
        return self.infer(graph, inputs)

    def graph_infer(self) -> GraphInfer:
        return generate_graph_infer(self)


def generate_graph_infer(backend: GraphBackend) -> GraphInfer:
    """`generation.GraphInfer` ("encoder", "decoder", "decoder_with_past") over a backend's graph files."""
    return lambda graph, inputs: backend.infer(GENERATE_GRAPHS[graph], inputs)


# ---- verify and bench ------------------------------------------------------------------------------
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


def parity_outputs(backend: GraphBackend, inputs: ParityInputs, classify_file: str,
                   ids: GenerationIds | None) -> dict[str, np.ndarray]:
    """verify's outputs from the graphs a backend holds: label scores [B, K], teacher-forced logits
    [B, T, V] and greedy tokens [B, 1 + n] (with `ids`, the generate head's token ids)."""
    feeds = {"input_ids": inputs.input_ids.numpy(), "attention_mask": inputs.attention_mask.numpy()}
    outputs = {}
    if backend.has(classify_file):
        outputs["scores"] = backend.infer(classify_file, feeds)["scores"]
    if ids is not None:
        hidden = backend.infer(ENCODER_GRAPH, feeds)["last_hidden_state"]  # [B, S, d]
        outputs["logits"] = backend.infer(GENERATE_GRAPHS["decoder"], {
            "input_ids": inputs.decoder_input_ids.numpy(), "encoder_hidden_states": hidden,
            "encoder_attention_mask": feeds["attention_mask"]})["logits"]
        outputs["tokens"] = greedy_generate(
            generate_graph_infer(backend), feeds["input_ids"], feeds["attention_mask"], inputs.max_new_tokens,
            ids.decoder_start_token_id, ids.eos_token_id, ids.pad_token_id)
    return outputs


class TensorRTRunner:
    """`verify`'s runner over an engine folder: whichever heads it holds, in chunks of at most the
    profile's max batch."""

    name = "tensorrt"

    def __init__(self, export_dir: Path, classify_file: str) -> None:
        self.export_dir, self.classify_file = Path(export_dir), classify_file
        self.backend = TensorRTBackend(export_dir)
        self.ids = self.backend.export.generation_ids if self.backend.has(ENCODER_GRAPH) else None

    def __enter__(self) -> TensorRTRunner:
        self.backend.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.backend.__exit__(*exc)

    def infer(self, inputs: ParityInputs) -> dict[str, np.ndarray]:
        infer = partial(parity_outputs, self.backend, classify_file=self.classify_file, ids=self.ids)
        return infer_in_chunks(infer, inputs, self.backend.max_batch, self.ids.pad_token_id if self.ids else 0)


def bench_functions(engines: TensorRTBackend, task: str, new_tokens: int) -> dict[str, Callable]:
    """`bench`'s callables over open engines: {"classify": fn, "generate": fn}, each
    fn(input_ids, attention_mask) on torch tensors; generation makes exactly `new_tokens` tokens."""
    if engines.manifest.task != task:
        raise UserError(f"{engines.export_dir} holds engines of task {engines.manifest.task}, not {task}")
    ids = engines.export.generation_ids if engines.has(ENCODER_GRAPH) else None

    def classify(input_ids, attention_mask):
        return engines.infer(CLASSIFY_GRAPH, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})

    def generate(input_ids, attention_mask):
        return greedy_generate(generate_graph_infer(engines), input_ids.numpy(), attention_mask.numpy(), new_tokens,
                               ids.decoder_start_token_id, ids.eos_token_id, ids.pad_token_id,
                               min_new_tokens=new_tokens)

    return {head: fn for head, fn, graph in (("classify", classify, CLASSIFY_GRAPH),
                                             ("generate", generate, ENCODER_GRAPH)) if engines.has(graph)}
