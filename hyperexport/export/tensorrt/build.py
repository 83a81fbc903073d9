"""`export --format tensorrt`: one TensorRT engine per graph of a task, built from an ONNX export.

The flow, all in a temporary sibling of `exports/<task>/tensorrt/` that is renamed into place at the end
(`artifacts.building`: nothing half-written, nothing at all when a check fails):
1. `export_onnx(..., precision=P)` into `<staging>/onnx/`: the precision lives in the ONNX graph, because
   TensorRT 11 is strongly typed only (no FP16/BF16 builder flags) and TensorRT 10 is asked to be;
2. the CPU compatibility check (`trt_compat`) on those graphs, with the profiles from `--batch`/`--seq`;
3. per graph: `OnnxParser.parse_from_file` into a strongly typed network, one optimization profile
   covering every input (`trt_profiles`), a timing cache shared by the graphs (and across tasks with
   `--timing-cache FILE`), `build_serialized_network` -> `<graph>.plan`.
The folder keeps the source ONNX graphs (`onnx/`, so the build can be re-checked and repeated), the
tokenizer, `task.json`, `io_spec.json` and a manifest with the TensorRT version, GPU name, compute
capability, profiles, precision and the sha256 of each source graph. Plans run only on the TensorRT
version and GPU model that built them; `tensorrt_runner` refuses others.

`tensorrt` is imported only inside the functions that build; without it, or without an NVIDIA GPU,
every entry point raises a one-line `UserError` before writing anything.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from hyperexport.contracts import publish
from hyperexport.contracts.export import ExportFolder, write_export_manifest
from hyperexport.contracts.manifest import relative_path, sha256_file
from hyperexport.contracts.names import (ENGINE_SOURCE_DIR, IO_SPEC_FILE, MODEL_CONFIG_FILE, TASK_FILE, TOKENIZER_DIR,
                                         default_export_dir, plan_name)
from hyperexport.errors import UserError
from hyperexport.export.onnx import DEFAULT_HEAD, DEFAULT_PRECISION, HEADS
from hyperexport.export.tracing import DEFAULT_OPSET
from hyperexport.export.precision import FLOAT_PRECISIONS
from hyperexport.export.tensorrt.profiles import DEFAULT_BATCH, DEFAULT_SEQ, ShapeRanges, check_task_fits, graph_profiles

PRECISIONS = FLOAT_PRECISIONS  # int8 is a CPU artifact of ONNX Runtime, not an engine precision
WORKSPACE_BYTES = 4 << 30
_GET_TENSORRT = "pip install -e '.[gpu]' (tensorrt, onnxruntime-gpu, polygraphy) on a machine with an NVIDIA GPU"


def require_tensorrt():
    """The `tensorrt` module, once both it and a CUDA GPU are present; else a one-line UserError naming
    what is missing and how to get it."""
    import torch

    missing = []
    try:
        import tensorrt
    except ImportError:
        tensorrt = None
        missing.append("the tensorrt package")
    if not torch.cuda.is_available():
        missing.append("an NVIDIA GPU with CUDA (torch.cuda.is_available() is False)")
    if missing:
        raise UserError(f"TensorRT engines need {' and '.join(missing)}: {_GET_TENSORRT}")
    return tensorrt


def device_facts(trt) -> dict:
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
    trt = require_tensorrt()
    facts = device_facts(trt)
    with publish.building(destination) as tmp:  # published on success; else removed, with any folder it made
        source = ExportFolder.open(export_onnx(run, task=task, head=head, opset=opset, output=tmp / ENGINE_SOURCE_DIR,
                                               overwrite=True, precision=precision, store_once=False))
        check_task_fits(ranges, source.facts)
        compatibility = require_compatible(source.path, ranges, facts["tensorrt_version"])
        profiles = graph_profiles(source.io_spec, ranges)
        cache = Path(timing_cache).read_bytes() if timing_cache is not None and Path(timing_cache).is_file() else b""
        graphs = sorted(profiles)
        for index, graph in enumerate(graphs, start=1):
            if progress:
                print(f"building {plan_name(graph)} ({index}/{len(graphs)}) with TensorRT {facts['tensorrt_version']} "
                      f"on {facts['gpu_name']}", flush=True)
            cache = build_engine(trt, source.path / graph, tmp / plan_name(graph), profiles[graph], cache,
                                 tf32=precision != "fp32")
        if timing_cache is not None:
            Path(timing_cache).parent.mkdir(parents=True, exist_ok=True)
            Path(timing_cache).write_bytes(cache)
        _copy_task_files(source.path, tmp)
        write_export_manifest(tmp, replace(
            source.manifest, format="tensorrt", **facts, tf32=precision != "fp32",
            source_run=relative_path(source.source_run, destination),
            profile_ranges=ranges.as_dict(), profiles=profiles,
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


def build_engine(trt, onnx_path: Path, plan_path: Path, profile: dict[str, dict[str, list[int]]],
                 timing_cache: bytes = b"", tf32: bool = False) -> bytes:
    """Parse `onnx_path` into a strongly typed network, build it with one optimization profile and the
    given timing cache, write the plan; returns the updated timing cache. TF32 (on by default in
    TensorRT) is cleared unless `tf32`: an fp32 plan then computes in fp32, as the parity bound assumes."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # TensorRT 10: opt in; TensorRT 11: always strongly typed, flag ignored
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # the file variant resolves external weight files
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = " ".join(errors[0].split()) if errors else "no error recorded"
        raise UserError(f"TensorRT's ONNX parser refused {onnx_path.name} ({len(errors)} errors; first: {first})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if not tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    optimization_profile = builder.create_optimization_profile()
    for name, shapes in profile.items():
        optimization_profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(optimization_profile)
    cache = config.create_timing_cache(timing_cache)
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # a cache from another GPU or version
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError(f"TensorRT could not build an engine from {onnx_path.name} (see the TensorRT log above): "
                        "check the profile ranges (--batch, --seq) and the GPU memory")
    plan_path.write_bytes(bytes(plan))
    return bytes(config.get_timing_cache().serialize())
