"""`export --format tensorrt`: one TensorRT engine per graph of a task, built from an ONNX export.

The flow, all in a temporary sibling of `exports/<task>/tensorrt/` that is renamed into place at the end
(`artifacts.building`: nothing half-written, nothing at all when a check fails):
1. `export_onnx(..., precision=P)` into `<staging>/onnx/`: the precision lives in the ONNX graph, because
   TensorRT 11 is strongly typed only (no FP16/BF16 builder flags) and TensorRT 10 is asked to be;
2. the CPU compatibility check (`trt_compat`) on those graphs, with the profiles from `--batch`/`--seq`;
3. per graph, Polygraphy's loaders (`loaders.plan_loaders`): the graph file parsed into a strongly typed
   network, one optimization profile covering every input (`profiles`), a timing cache file shared by
   the graphs (and across tasks with `--timing-cache FILE`), the engine built and saved as `<graph>.plan`.
The folder keeps the source ONNX graphs (`onnx/`, so the build can be re-checked and repeated), the
tokenizer, `task.json`, `io_spec.json` and a manifest with the TensorRT version, GPU name, compute
capability, profiles, precision and the sha256 of each source graph. Plans run only on the TensorRT
version and GPU model that built them; `runtime.tensorrt` refuses others.

`tensorrt` and `polygraphy` are imported only inside the functions that build; without them, or without
an NVIDIA GPU, every entry point raises a one-line `UserError` before writing anything.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TypedDict

from hyperexport.contracts import publish
from hyperexport.contracts.export import ExportFolder, write_export_manifest
from hyperexport.contracts.manifest import relative_path, sha256_file
from hyperexport.contracts.names import (
    ENGINE_SOURCE_DIR,
    IO_SPEC_FILE,
    MODEL_CONFIG_FILE,
    TASK_FILE,
    TIMING_CACHE_FILE,
    TOKENIZER_DIR,
    default_export_dir,
    plan_name,
)
from hyperexport.errors import UserError
from hyperexport.export.onnx import HEADS
from hyperexport.export.precision import FLOAT_PRECISIONS
from hyperexport.export.tensorrt.loaders import build_plan, plan_loaders
from hyperexport.export.tensorrt.profiles import (
    DEFAULT_BATCH,
    DEFAULT_SEQ,
    ShapeRanges,
    check_task_fits,
    graph_profiles,
)
from hyperexport.options import DEFAULT_HEAD, DEFAULT_OPSET, DEFAULT_PRECISION

PRECISIONS = FLOAT_PRECISIONS  # int8 is a CPU artifact of ONNX Runtime, not an engine precision
_GET_TENSORRT = "pip install -e '.[gpu]' (tensorrt, onnxruntime-gpu, polygraphy) on a machine with an NVIDIA GPU"


def require_tensorrt() -> ModuleType:
    """The `tensorrt` module, once it, `polygraphy` and a CUDA GPU are present; else a one-line UserError
    naming what is missing and how to get it."""
    import importlib.util

    import torch

    missing = []
    try:
        import tensorrt
    except ImportError:
        tensorrt = None
        missing.append("the tensorrt package")
    if importlib.util.find_spec("polygraphy") is None:
        missing.append("the polygraphy package")
    if not torch.cuda.is_available():
        missing.append("an NVIDIA GPU with CUDA (torch.cuda.is_available() is False)")
    if missing:
        raise UserError(f"TensorRT engines need {' and '.join(missing)}: {_GET_TENSORRT}")
    return tensorrt


class DeviceFacts(TypedDict):
    tensorrt_version: str
    gpu_name: str
    compute_capability: str


def device_facts(trt: ModuleType) -> DeviceFacts:
    """What a plan is tied to: the TensorRT version and the GPU model that built it."""
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {"tensorrt_version": trt.__version__, "gpu_name": torch.cuda.get_device_name(),
            "compute_capability": f"{major}.{minor}"}


def export_tensorrt(run: str | Path | None = None, *, task: str, head: str = DEFAULT_HEAD,
                    precision: str = DEFAULT_PRECISION, batch: str = DEFAULT_BATCH, seq: str = DEFAULT_SEQ,
                    output: Path | None = None, overwrite: bool = False, opset: int = DEFAULT_OPSET,
                    timing_cache: Path | None = None, progress: bool = True) -> Path:
    """Build the engines of `task` into `exports/<task>/tensorrt/` (`tensorrt-bf16/`, `tensorrt-fp16/`; or
    `output`); returns the folder."""
    from hyperexport.export.onnx import export_onnx
    from hyperexport.export.tensorrt.compat import require_compatible

    if head not in HEADS:
        raise UserError(f"unknown head '{head}': use generate, classify or both")
    if precision not in PRECISIONS:
        raise UserError(f"precision '{precision}' is not available for tensorrt: use {', '.join(PRECISIONS)} "
                        "(int8 is an ONNX Runtime CPU export: --format onnx --precision int8)")
    ranges = ShapeRanges.from_flags(batch, seq)
    destination = Path(output) if output is not None else default_export_dir(task, "tensorrt", precision)
    if destination.exists() and not overwrite:
        raise UserError(f"{destination} already exists: pass --overwrite to replace it, or choose another --output")
    facts = device_facts(require_tensorrt())
    with publish.building(destination) as tmp:  # published on success; else removed, with any folder it made
        source = ExportFolder.open(export_onnx(run, task=task, head=head, opset=opset, output=tmp / ENGINE_SOURCE_DIR,
                                               overwrite=True, precision=precision, store_once=False))
        check_task_fits(ranges, source.facts)
        compatibility = require_compatible(source.path, ranges, facts["tensorrt_version"])
        profiles = graph_profiles(source.io_spec, ranges)
        graphs = sorted(profiles)
        with timing_cache_file(timing_cache) as cache:
            for index, graph in enumerate(graphs, start=1):
                if progress:
                    print(f"building {plan_name(graph)} ({index}/{len(graphs)}) with TensorRT "
                          f"{facts['tensorrt_version']} on {facts['gpu_name']}", flush=True)
                build_plan(plan_loaders(source.path / graph, tmp / plan_name(graph), profiles[graph],
                                        precision=precision, tensorrt_version=facts["tensorrt_version"],
                                        timing_cache=cache))
        _copy_task_files(source.path, tmp)
        write_export_manifest(tmp, replace(
            source.manifest, format="tensorrt", **facts, tf32=precision != "fp32",
            source_run=relative_path(source.source_run, destination),
            profile_ranges=ranges.as_dict(), profiles=_as_tuples(profiles),
            plans={plan_name(g): f"{ENGINE_SOURCE_DIR}/{g}" for g in graphs},
            source_onnx_sha256={g: sha256_file(source.path / g) for g in graphs},
            tensorrt_compatibility=compatibility))
    return destination


def _copy_task_files(source: Path, folder: Path) -> None:
    """The tokenizer, task facts, io spec (and the T5 config.json) next to the plans."""
    shutil.copytree(source / TOKENIZER_DIR, folder / TOKENIZER_DIR)
    for name in (TASK_FILE, IO_SPEC_FILE, MODEL_CONFIG_FILE):
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)


@contextmanager
def timing_cache_file(timing_cache: Path | None) -> Iterator[Path]:
    """The timing cache the graphs share: `--timing-cache FILE` (read if there, written back; Polygraphy
    locks it through FILE.lock while it reads or writes), or a temporary file for this export only."""
    if timing_cache is not None:
        Path(timing_cache).parent.mkdir(parents=True, exist_ok=True)
        yield Path(timing_cache)
        return
    with tempfile.TemporaryDirectory(prefix="hyperexport-timing-") as folder:
        cache = Path(folder) / TIMING_CACHE_FILE
        cache.touch()  # an empty cache to start from (a missing file would be warned about)
        yield cache


def _as_tuples(
        profiles: dict[str, dict[str, dict[str, list[int]]]]) -> dict[str, dict[str, dict[str, tuple[int, ...]]]]:
    """The manifest's form of `graph_profiles` (shapes as tuples, as reading the manifest gives them)."""
    return {graph: {name: {key: tuple(shape) for key, shape in ranges.items()} for name, ranges in inputs.items()}
            for graph, inputs in profiles.items()}
