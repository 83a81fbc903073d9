"""One interface over every runtime that runs an export's graphs (Polygraphy's runner design).

A backend is a context manager (activate / deactivate) whose `infer(graph, feeds)` runs one graph of
an export (named by its ONNX file, e.g. `encoder_model.onnx`) on named numpy arrays and returns its
named outputs. ONNX Runtime sessions (here), TensorRT engines (`runtime.tensorrt`) and a Triton
server (`serve.client`) all fit behind it; the heads (`runtime.heads`: label scores, the greedy
loop) are written once against it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hyperexport.errors import UserError
from hyperexport.options import CPU_RUNNABLE

Feeds = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


class GraphBackend(Protocol):
    """What the heads need of a runtime. A backend may also offer `infer_keeping` (see `KeepingBackend`),
    a faster path for the decode loop; `keeping_infer` picks it where it exists."""

    def __enter__(self) -> GraphBackend: ...

    def __exit__(self, *exc: object) -> None: ...

    @property
    def max_batch(self) -> int | None:
        """The largest batch one call takes (an engine's profile), None for any."""
        ...

    def has(self, graph: str) -> bool: ...

    def infer(self, graph: str, feeds: Feeds) -> Outputs: ...


class KeepingBackend(Protocol):
    def infer_keeping(self, graph: str, feeds: Mapping[str, Any], keep: str) -> dict[str, Any]:
        """`infer`, except that outputs whose names start with `keep` come back as the runtime's own
        values (ONNX Runtime: `OrtValue`s), which only go back in as feeds of a later call: past
        keys/values stay where the runtime wrote them instead of crossing into numpy every step."""
        ...


def keeping_infer(backend: GraphBackend) -> Callable[[str, Mapping[str, Any], str], dict[str, Any]]:
    """The backend's `infer_keeping`, or `infer` (which keeps everything as numpy arrays)."""
    keeping = getattr(backend, "infer_keeping", None)
    return keeping if keeping is not None else (lambda graph, feeds, keep: backend.infer(graph, feeds))


def value_shape(value: Any) -> tuple[int, ...]:
    """The shape of a numpy array or of a kept runtime value (an `OrtValue`'s `shape()` is a method)."""
    shape = value.shape
    return tuple(shape() if callable(shape) else shape)


class Wrapping:
    """A backend around `self.backend` that delegates everything but what it overrides (usually `infer`):
    entering and leaving, `max_batch`, `has`."""

    backend: GraphBackend

    def __enter__(self):
        self.backend.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.backend.__exit__(*exc)

    @property
    def max_batch(self) -> int | None:
        return self.backend.max_batch

    def has(self, graph: str) -> bool:
        return self.backend.has(graph)


def onnxruntime_provider(precision: str) -> str | None:
    """The ONNX Runtime execution provider that can run graphs of `precision` here, or None."""
    import onnxruntime as ort

    if precision in CPU_RUNNABLE:
        return CPU_PROVIDER
    return CUDA_PROVIDER if CUDA_PROVIDER in ort.get_available_providers() else None


class OnnxRuntimeBackend:
    """ONNX Runtime sessions over the `.onnx` graphs of a folder (or over `paths`: graph name -> file,
    e.g. a Triton repository's `models/<name>/1/model.onnx`), each opened on first use.

    `threads`: intra-op threads per session (default: ONNX Runtime's, every core). Idle pool threads do
    not spin, so that several sessions (or PyTorch) can share the cores without slowing each other (on
    this shared machine, letting them spin made the t5-small decode steps 3-5x slower).
    Weights that several graphs read in place (the tied embedding) are mapped once for all sessions
    (`runtime.shared_weights`).
    """

    def __init__(self, folder: str | Path, provider: str = CPU_PROVIDER, threads: int | None = None,
                 paths: Mapping[str, Path] | None = None):
        self.folder, self.provider, self.threads = Path(folder), provider, threads
        self.paths = dict(paths) if paths is not None else None
        self.sessions: dict = {}
        self.shared = None  # SharedWeights, made with the first session

    def __enter__(self) -> OnnxRuntimeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sessions = {}

    @property
    def max_batch(self) -> int | None:
        return None

    def path(self, graph: str) -> Path:
        return self.paths[graph] if self.paths is not None and graph in self.paths else self.folder / graph

    def has(self, graph: str) -> bool:
        return self.path(graph).is_file()

    def session(self, graph: str):
        """The `InferenceSession` of `graph` (made once)."""
        if graph not in self.sessions:
            import onnxruntime as ort

            if not self.has(graph):
                raise UserError(f"{self.folder} has no {graph}: export that head")
            options = ort.SessionOptions()
            options.log_severity_level = 3  # not the warning on each in-place weight (a graph input with a default)
            if self.threads is not None:
                options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            for name, value in self._shared_weights().initializers(graph).items():
                options.add_initializer(name, value)
            self.sessions[graph] = ort.InferenceSession(str(self.path(graph)), options, providers=[self.provider])
        return self.sessions[graph]

    def _shared_weights(self):
        from hyperexport.runtime.shared_weights import SharedWeights

        if self.shared is None:
            graphs = self.paths or {path.name: path for path in sorted(self.folder.glob("*.onnx"))}
            self.shared = SharedWeights(self.folder, graphs)
        return self.shared

    def infer(self, graph: str, feeds: Feeds) -> Outputs:
        session = self.session(graph)
        wanted = {i.name for i in session.get_inputs()}
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in wanted})))

    def infer_keeping(self, graph: str, feeds: Mapping[str, Any], keep: str) -> dict[str, Any]:
        """`KeepingBackend.infer_keeping` through an I/O binding: kept outputs stay `OrtValue`s that
        ONNX Runtime allocated, and come back in without a copy."""
        import onnxruntime as ort

        session = self.session(graph)
        binding = session.io_binding()
        for meta in session.get_inputs():
            value = feeds[meta.name]
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(meta.name, value)
            else:
                binding.bind_cpu_input(meta.name, np.ascontiguousarray(value))
        names = [o.name for o in session.get_outputs()]
        for name in names:
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        return {name: value if name.startswith(keep) else value.numpy()
                for name, value in zip(names, binding.get_outputs())}
