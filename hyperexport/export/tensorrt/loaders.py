"""One plan from one ONNX graph, through Polygraphy's lazy loaders; Polygraphy failures as one-line errors.

    NetworkFromOnnxPath(graph, strongly_typed)    parse_from_file, so external weight files resolve
    CreateConfig(profiles=[one Profile], tf32, load_timing_cache) + the workspace limit (PostprocessConfig)
    EngineBytesFromNetwork(network, config, save_timing_cache) -> SaveBytes(<graph>.plan)

Constructing the loaders imports neither tensorrt nor CUDA (Polygraphy imports them when a loader is
called), so `plan_loaders` can be checked on any machine; `build_plan` needs TensorRT and a GPU.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hyperexport.errors import UserError

if TYPE_CHECKING:
    import tensorrt as trt
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        Profile,
    )

GraphProfile = dict[str, dict[str, list[int]]]  # input name -> {"min": shape, "opt": shape, "max": shape}
WORKSPACE_BYTES = 4 << 30
ALWAYS_STRONGLY_TYPED = 11  # the TensorRT major version from which every network is strongly typed
POLYGRAPHY_LOGGER = "Polygraphy"  # the `logging` logger Polygraphy writes to in its Python-logging mode
_ANSI_COLOR = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class PlanLoaders:
    """The loaders of one plan: `network` parses the graph, `config` sets up the builder; the plan and
    the timing cache (read before, merged and written after the build) are files."""

    network: NetworkFromOnnxPath
    config: CreateConfig
    plan: Path
    timing_cache: Path

    def engine_bytes(self, network: tuple[trt.Builder, trt.INetworkDefinition, trt.OnnxParser]
                     ) -> EngineBytesFromNetwork:
        """The serialized engine of the network that `self.network` parsed."""
        from polygraphy.backend.trt import EngineBytesFromNetwork, PostprocessConfig

        return EngineBytesFromNetwork(network, PostprocessConfig(self.config, limit_workspace),
                                      save_timing_cache=str(self.timing_cache))


def strongly_typed(tensorrt_version: str) -> bool:
    """Whether to ask for a strongly typed network: TensorRT 10 opts in with a flag; from TensorRT 11
    every network is strongly typed and the flag is not to be relied on."""
    return int(tensorrt_version.split(".")[0]) < ALWAYS_STRONGLY_TYPED


def polygraphy_profile(profile: GraphProfile) -> Profile:
    """Polygraphy's optimization profile: every input of the graph with its min/opt/max shapes."""
    from polygraphy.backend.trt import Profile

    built = Profile()
    for name, shapes in profile.items():
        built.add(name, shapes["min"], shapes["opt"], shapes["max"])
    return built


def plan_loaders(onnx_path: Path, plan_path: Path, profile: GraphProfile, *, precision: str,
                 tensorrt_version: str, timing_cache: Path) -> PlanLoaders:
    """The loaders that build `plan_path` from `onnx_path` with one optimization profile. TF32 (on by
    default in TensorRT) stays off for fp32 plans: they compute in fp32, as the parity bound assumes."""
    from polygraphy.backend.trt import CreateConfig, NetworkFromOnnxPath

    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=strongly_typed(tensorrt_version))
    config = CreateConfig(profiles=[polygraphy_profile(profile)], tf32=precision != "fp32",
                          load_timing_cache=str(timing_cache))
    return PlanLoaders(network, config, plan_path, timing_cache)


def limit_workspace(builder: trt.Builder, network: trt.INetworkDefinition, config: trt.IBuilderConfig) -> None:
    """`PostprocessConfig`'s step: cap the builder's workspace pool (the enum needs tensorrt, so it is set
    here, when the config is made, and not in `CreateConfig(memory_pool_limits=...)`)."""
    import tensorrt as trt

    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)


def build_plan(loaders: PlanLoaders) -> None:
    """Parse the graph, build the engine and write the plan (the timing cache file updated)."""
    from polygraphy.backend.common import SaveBytes

    graph = Path(loaders.network.path).name
    with polygraphy_failures(f"TensorRT's ONNX parser refused {graph}"):
        parsed = loaders.network()  # (builder, network, parser)
    with polygraphy_failures(f"TensorRT could not build an engine from {graph}",
                             hint="check the profile ranges (--batch, --seq) and the GPU memory"):
        SaveBytes(loaders.engine_bytes(parsed), str(loaders.plan))()


# ---- Polygraphy's log and failures -----------------------------------------------------------------
@contextmanager
def polygraphy_failures(what: str, hint: str | None = None) -> Iterator[None]:
    """Polygraphy (and TensorRT through it) logs warnings and errors only while the block runs; a
    Polygraphy failure in the block becomes a one-line UserError naming the first error logged."""
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    with _recorded_errors() as errors, G_LOGGER.verbosity(G_LOGGER.WARNING):
        try:
            yield
        except PolygraphyException as failure:
            plural = "s" if len(errors) > 1 else ""
            cause = f"{len(errors)} error{plural}; first: {errors[0]}" if errors else str(failure)
            raise UserError(f"{what} ({cause})" + (f": {hint}" if hint else "")) from None


class _ErrorRecorder(logging.Handler):
    """Prints Polygraphy's messages where it would (the critical one becomes our UserError instead) and
    keeps its errors, without their severity letter and colors."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.CRITICAL:
            return
        message = record.getMessage()
        print(message, file=sys.stdout, flush=True)
        if record.levelno == logging.ERROR:
            self.errors.append(_ANSI_COLOR.sub("", message).removeprefix(self.prefix).strip())


@contextmanager
def _recorded_errors() -> Iterator[list[str]]:
    """Polygraphy's errors logged in the block (its Python-logging mode, restored after)."""
    from polygraphy.logger import G_LOGGER

    logger = logging.getLogger(POLYGRAPHY_LOGGER)
    recorder = _ErrorRecorder(G_LOGGER.SEVERITY_LETTER_MAPPING[G_LOGGER.ERROR] + " ")
    saved = (G_LOGGER.use_python_logging_system, logger.level, logger.propagate)
    G_LOGGER.use_python_logging_system = True
    logger.setLevel(1)  # Polygraphy filters by its own severity first
    logger.propagate = False
    logger.addHandler(recorder)
    try:
        yield recorder.errors
    finally:
        logger.removeHandler(recorder)
        G_LOGGER.use_python_logging_system, level, logger.propagate = saved
        logger.setLevel(level)
