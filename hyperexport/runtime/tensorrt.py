"""Running an engine folder (`export --format tensorrt`) through Polygraphy's `TrtRunner`.

`TensorRTBackend` is the `GraphBackend` of an engine folder: one runner per plan, activated (the plan
deserialized, an execution context made) on entering and deactivated on leaving; `infer(graph file,
feeds)` runs one graph on named numpy arrays; verify, predict and bench use it like any backend.

A plan runs only on the TensorRT version and GPU model that built it: before anything is deserialized,
the manifest's `tensorrt_version`, `compute_capability` and `gpu_name` are compared with this machine's
(`check_plan_compatible`, pure Python) and a mismatch is a one-line UserError saying how to rebuild.
Inputs outside the engine's optimization profile are refused the same way (`check_in_profile`); the
profile's max batch is the backend's `max_batch`, so callers run larger batches in chunks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hyperexport.contracts.export import ExportFolder, ExportManifest, GraphIo
from hyperexport.contracts.names import plan_name
from hyperexport.errors import UserError
from hyperexport.export.tensorrt.build import require_tensorrt
from hyperexport.export.tensorrt.compat import ENGINE_IO_DTYPES
from hyperexport.runtime.backends import Feeds, Outputs

if TYPE_CHECKING:
    import torch
    from polygraphy.backend.trt import TrtRunner

_PLAN_FACTS = ("tensorrt_version", "compute_capability", "gpu_name")


def check_plan_compatible(folder: Path, manifest: ExportManifest, current: Mapping[str, object]) -> None:
    """Refuse plans built with another TensorRT version or on another GPU model than `current`
    (`build.device_facts`)."""
    different = [fact for fact in _PLAN_FACTS if str(getattr(manifest, fact)) != str(current.get(fact))]
    if different:
        built = f"TensorRT {manifest.tensorrt_version} on {manifest.gpu_name} (sm {manifest.compute_capability})"
        here = (f"TensorRT {current.get('tensorrt_version')} on {current.get('gpu_name')} "
                f"(sm {current.get('compute_capability')})")
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
        raise UserError(f"{export_dir} is {export.manifest.kind}, not TensorRT engines: "
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
