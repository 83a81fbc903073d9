"""`deploy`: a verified export as a Triton Inference Server model repository, plus a client folder.

`<triton-repo>/models/` is the model repository (`tritonserver --model-repository <triton-repo>/models`):
one model per graph, named `<task>_<graph>` (`rte_classify`, `rte_encoder`, `rte_decoder`,
`rte_decoder_with_past`), each `config.pbtxt` + `1/model.plan` (TensorRT) or `1/model.onnx` (ONNX
Runtime). `<triton-repo>/clients/<task>/` holds what a client needs and Triton must not see: the
tokenizer, `task.json`, `deploy.json` (model names, token ids, batch limit) and `client.py`.

A multi-task export deploys as one model per graph for all its tasks (`multitask_classify`, ...): every
request carries `task_ids` (the rows of `tasks.json`, copied to the client folder), so Triton's dynamic
batcher merges requests of different tasks into one batch.

Generation runs client-side: Triton ensembles cannot loop, so the client (`serve.client`, which the
folder's `client.py` runs) drives the one greedy loop over the encoder and decoder models (and optimum's
first-step decoder in three-graph exports) through its `TritonBackend`, or over the repository's own
files with ONNX Runtime (`--local`). An export's `generate_model.onnx` is not deployed. Graphs that share
a weights file each get it beside their model.onnx, hard-linked where the file system allows.

An export is deployed only if `verify` passed on it (`parity_report.json`). Every config.pbtxt is
Triton's protobuf message, compared with the io spec before anything is moved into place.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hyperexport.contracts import publish
from hyperexport.contracts.deploy import DeployFacts
from hyperexport.contracts.export import FORMAT_KINDS, ExportFolder, GraphIo
from hyperexport.contracts.manifest import sha256_file
from hyperexport.contracts.names import (
    CLASSIFY_GRAPH,
    CLIENT_FILE,
    CLIENTS_DIR,
    ENCODER_GRAPH,
    GENERATE_MODEL_GRAPH,
    MANIFEST_FILE,
    MODEL_VERSION,
    MODELS_DIR,
    MULTITASK_EXPORT,
    PARITY_REPORT_FILE,
    TASK_FILE,
    TASK_TABLE_FILE,
    TOKENIZER_DIR,
    TRITON_CONFIG_FILE,
    TRITON_MODEL_FILES,
    default_export_dir,
    graph_stem,
)
from hyperexport.errors import UserError
from hyperexport.options import DEFAULT_TRITON_REPO, Format
from hyperexport.serve.triton_config import PLATFORMS, check_model_config, config_text, model_config

if TYPE_CHECKING:
    import numpy as np  # the client's arrays; numpy loads only where they are made

ONNX_MAX_BATCH = 32  # an ONNX export has no profile; Triton's batcher still needs a bound
ModelInfer = Callable[[str, dict[str, "np.ndarray"]], dict[str, "np.ndarray"]]


def model_name(task: str, graph: str) -> str:
    """`rte`, `decoder_with_past_model.onnx` -> `rte_decoder_with_past`."""
    return f"{task}_{graph_stem(graph)}"


def require_passed_parity(export: ExportFolder, purpose: str = "deploying") -> None:
    """Refuse an export whose `verify` did not pass, or passed for another precision (before `purpose`)."""
    verdict = export.parity()
    if not verdict.passed:
        raise UserError(f"{export.path} failed verify (see {export.path / PARITY_REPORT_FILE}): fix the export and "
                        f"verify it before {purpose}")
    if verdict.precision != export.manifest.precision:
        raise UserError(f"{export.path / PARITY_REPORT_FILE} is for precision {verdict.precision}, the export is "
                        f"{export.manifest.precision}: run `hyperexport verify {export.path}` first")


def deploy(*, task: str | None, fmt: Format = "tensorrt", triton_repo: str | Path = DEFAULT_TRITON_REPO,
           export_dir: str | Path | None = None, overwrite: bool = False) -> DeployFacts:
    """Write the task's models into `<triton_repo>/models/` and its client folder; returns deploy.json.
    `task` None: the multi-task export (`multitask_<graph>` models whose requests carry `task_ids`)."""
    if fmt not in PLATFORMS:
        raise UserError(f"unknown format '{fmt}': use tensorrt or onnx")
    task = task if task is not None else MULTITASK_EXPORT
    export_dir = Path(export_dir) if export_dir is not None else default_export_dir(task, fmt, "fp32")
    if not (export_dir / MANIFEST_FILE).is_file():
        raise UserError(f"no export at {export_dir}: run `hyperexport export --task {task} --format {fmt}` "
                        f"and `hyperexport verify {export_dir}`")
    export = ExportFolder.open(export_dir)
    manifest = export.manifest
    if manifest.format != fmt or manifest.task != task:
        raise UserError(f"{export_dir} is {manifest.kind} of {manifest.task}, not {FORMAT_KINDS[fmt]} of "
                        f"{task}: pass the matching --export")
    require_passed_parity(export)
    spec = {graph: io for graph, io in export.io_spec.graphs.items() if graph != GENERATE_MODEL_GRAPH}  # client loops
    missing = [export.graph_file(graph).name for graph in sorted(spec) if not export.has(graph)]
    if missing:
        raise UserError(f"{export_dir} has no {missing[0]}: build the engines with "
                        f"`hyperexport export --task {task} --format tensorrt --overwrite`")
    max_batch = manifest.max_batch or ONNX_MAX_BATCH
    repo = Path(triton_repo)
    names = {graph: model_name(task, graph) for graph in sorted(spec)}
    targets = [repo / MODELS_DIR / name for name in names.values()] + [repo / CLIENTS_DIR / task]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} already exists: pass --overwrite to replace the task's models")
    new_parent = publish.first_missing(repo)
    try:
        with publish.write_errors(repo, "free disk space, make the folder writable, or choose another --triton-repo",
                                    option="--triton-repo"):
            staging = publish.temporary_sibling(repo / f"{task}-deploy")  # .<task>-deploy.<pid>.* in the repo
            try:
                for graph, name in names.items():
                    _write_model(staging / MODELS_DIR / name, export, graph, spec[graph], name, fmt, max_batch)
                description = _write_client(staging / CLIENTS_DIR / task, export, names, max_batch)
                for target in targets:  # each model folder is replaced in one step
                    target.parent.mkdir(parents=True, exist_ok=True)
                    publish.replace_folder(staging / target.relative_to(repo), target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        publish.remove_if_empty(new_parent)  # a failed first deploy leaves no empty repository behind
        raise
    return description


def _write_model(folder: Path, export: ExportFolder, graph: str, graph_io: GraphIo, name: str, fmt: str,
                 max_batch: int) -> None:
    config = model_config(name, graph_io, graph, fmt, max_batch)
    problems = check_model_config(config, name, graph_io, graph, fmt, max_batch)
    if problems:  # a bug in model_config, not bad input
        raise RuntimeError(f"generated {TRITON_CONFIG_FILE} for {name} does not match the io spec: {problems[0]}")
    (folder / MODEL_VERSION).mkdir(parents=True)
    (folder / TRITON_CONFIG_FILE).write_text(config_text(config))
    shutil.copy(export.graph_file(graph), folder / MODEL_VERSION / TRITON_MODEL_FILES[fmt])
    if not export.is_engine:
        from hyperexport.export.weights import external_data_files

        for data_file in external_data_files(export.graph_file(graph)):  # referenced by relative name: keep it
            _link_or_copy(export.path / data_file, folder / MODEL_VERSION / data_file)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows one (the graphs of an export share one weights file, which
    each model folder needs beside its model.onnx), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)


def _write_client(folder: Path, export: ExportFolder, names: dict[str, str], max_batch: int) -> DeployFacts:
    manifest = export.manifest
    folder.mkdir(parents=True)
    shutil.copytree(export.path / TOKENIZER_DIR, folder / TOKENIZER_DIR)
    task_file = TASK_TABLE_FILE if export.is_multitask else TASK_FILE  # a multi-task client's examples name their task
    shutil.copy(export.path / task_file, folder / task_file)
    facts = DeployFacts(
        task=manifest.task, format=manifest.format, precision=manifest.precision,
        head="classify" if CLASSIFY_GRAPH in names else "generate", max_batch_size=max_batch,
        models={graph_stem(graph): name for graph, name in names.items()},
        token_ids=export.generation_ids if ENCODER_GRAPH in names else None,
        tensorrt_version=manifest.tensorrt_version, gpu_name=manifest.gpu_name,
        compute_capability=manifest.compute_capability,
        export=str(export.path), export_manifest_sha256=sha256_file(export.path / MANIFEST_FILE))
    facts.write(folder)
    script = MULTITASK_CLIENT_SCRIPT if export.is_multitask else CLIENT_SCRIPT.format(task=manifest.task)
    (folder / CLIENT_FILE).write_text(script)
    return facts


CLIENT_SCRIPT = '''"""Label examples of task {task} with its models on a Triton server (hyperexport.serve.client).

    tritonserver --model-repository ../../models
    python client.py '{{"sentence1": "...", "sentence2": "..."}}' [--url localhost:8001] [--head generate]
    python client.py --local '...'    # ONNX deployments only: the repository's model.onnx files, no server

Needs `pip install hyperexport 'tritonclient[grpc]'`.
"""

import sys
from pathlib import Path

from hyperexport.serve.client import main

sys.exit(main(Path(__file__).resolve().parent))
'''

MULTITASK_CLIENT_SCRIPT = '''"""Label examples of the tasks in tasks.json with their shared models on a Triton server
(hyperexport.serve.client); each example names its task.

    tritonserver --model-repository ../../models
    python client.py '{"task": "rte", "sentence1": "...", "sentence2": "..."}' [--url localhost:8001]
    python client.py --local '...'    # ONNX deployments only: the repository's model.onnx files, no server

Needs `pip install hyperexport 'tritonclient[grpc]'`.
"""

import sys
from pathlib import Path

from hyperexport.serve.client import main

sys.exit(main(Path(__file__).resolve().parent))
'''
