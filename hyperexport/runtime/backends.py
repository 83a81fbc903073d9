"""One interface over every runtime that runs an export's graphs (Polygraphy's runner design).

A backend is a context manager (activate / deactivate) whose `infer(graph, feeds)` runs one graph of
an export (named by its ONNX file, e.g. `encoder_model.onnx`) on named numpy arrays and returns its
named outputs. ONNX Runtime sessions (here), TensorRT engines (`runtime.tensorrt`) and a Triton
server (`serve.client`) all fit behind it; the heads (`runtime.heads`: label scores, the greedy
loop) are written once against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from hyperexport.errors import UserError


Feeds = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


class GraphBackend(Protocol):
    """What the heads need of a runtime."""

    def __enter__(self) -> GraphBackend: ...

    def __exit__(self, *exc: object) -> None: ...

    @property
    def max_batch(self) -> int | None:
        """The largest batch one call takes (an engine's profile), None for any."""
        ...

    def has(self, graph: str) -> bool: ...

    def infer(self, graph: str, feeds: Feeds) -> Outputs: ...


def onnxruntime_provider(precision: str) -> str | None:
    """The ONNX Runtime execution provider that can run graphs of `precision` here, or None."""
    import onnxruntime as ort

    from hyperexport.options import CPU_RUNNABLE

    if precision in CPU_RUNNABLE:
        return CPU_PROVIDER
    return CUDA_PROVIDER if CUDA_PROVIDER in ort.get_available_providers() else None


class OnnxRuntimeBackend:
    """ONNX Runtime sessions over the `.onnx` graphs of a folder (or over `paths`: graph name -> file,
    e.g. a Triton repository's `models/<name>/1/model.onnx`), each opened on first use.

    `threads`: intra-op threads per session (default: ONNX Runtime's, every core). Idle pool threads do
    not spin, so that several sessions (or PyTorch) can share the cores without slowing each other.
    """

    def __init__(self, folder: str | Path, provider: str = CPU_PROVIDER, threads: int | None = None,
                 paths: Mapping[str, Path] | None = None):
        self.folder, self.provider, self.threads = Path(folder), provider, threads
        self.paths = dict(paths) if paths is not None else None
        self.sessions: dict = {}

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
            if self.threads is not None:
                options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.sessions[graph] = ort.InferenceSession(str(self.path(graph)), options, providers=[self.provider])
        return self.sessions[graph]

    def infer(self, graph: str, feeds: Feeds) -> Outputs:
        session = self.session(graph)
        wanted = {i.name for i in session.get_inputs()}
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in wanted})))
