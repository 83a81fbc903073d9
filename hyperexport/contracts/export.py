"""An export folder (`export`): exports/<task>/<format>[-<precision>]/.

    classify_model.onnx           input_ids, attention_mask -> scores [batch, num_labels]
    encoder_model.onnx, decoder_with_past_model.onnx, config.json
                                  the generate graphs: the encoder (with the cross-attention keys/values)
                                  and one decoder for every step (`export.one_decoder`); optimum's
                                  decoder_model.onnx too in the three-graph layout TensorRT builds from
    generate_model.onnx           optional: the whole greedy loop (ONNX Runtime's BeamSearch, one beam)
    graphs.onnx_data              every graph's weights, each distinct tensor once (`export.weights`)
    *.plan, onnx/                 an engine folder: TensorRT plans and the ONNX export they came from
    tokenizer/, task.json         what a client needs to format, tokenize and decode (`TaskFacts`)
    tasks.json                    a multi-task export's task table instead of task.json (`TaskTable`); its
                                  graphs take one more input, task_ids [batch] (`export.multitask`)
    io_spec.json                  every graph's inputs and outputs (`IoSpec`)
    manifest.json                 `ExportManifest` and every file's sha256
    parity_report.json            written later by `verify` (`ParityVerdict` reads its verdict)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperexport.contracts import manifest as sealing
from hyperexport.contracts.fields import ContractError, from_json, to_json
from hyperexport.contracts.names import (
    CLASSIFY_GRAPH,
    ENCODER_GRAPH,
    ENGINE_SOURCE_DIR,
    IO_SPEC_FILE,
    MANIFEST_FILE,
    MODEL_CONFIG_FILE,
    PARITY_REPORT_FILE,
    TOKENIZER_DIR,
    plan_name,
)
from hyperexport.contracts.publish import write_json
from hyperexport.contracts.task import TaskFacts
from hyperexport.contracts.task_table import TaskTable, has_task_table
from hyperexport.errors import UserError
from hyperexport.options import FORMATS as OPTION_FORMATS
from hyperexport.recipe.schema import BackboneConfig

STAGE = "export"
FORMATS = OPTION_FORMATS
FORMAT_KINDS = {"onnx": "an ONNX export", "tensorrt": "a TensorRT engine folder"}
_EXPORT_HINT = "run `hyperexport export --task <task>` first"


@dataclass(frozen=True)
class ExportManifest:
    format: str  # onnx or tensorrt
    head: str  # generate, classify or both
    precision: str
    opset: int
    task: str
    source_run: str  # the run folder, relative to the export folder
    source_task_sha256: dict[str, str]
    backbone: BackboneConfig | None = None  # None: an export from before the field (its default applies)
    folds: tuple[str, ...] = ()
    # TensorRT engine folders only: what the plans are tied to and were built with
    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    tf32: bool | None = None
    profile_ranges: dict[str, tuple[int, ...]] | None = None  # {"batch": [min, opt, max], "seq": [...]}
    profiles: dict[str, dict[str, dict[str, tuple[int, ...]]]] | None = None  # graph -> input -> min/opt/max
    plans: dict[str, str] | None = None  # plan file -> its source graph
    source_onnx_sha256: dict[str, str] | None = None
    tensorrt_compatibility: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        """"an ONNX export" or "a TensorRT engine folder", for messages."""
        return FORMAT_KINDS.get(self.format, f"a {self.format} export")

    @property
    def max_batch(self) -> int | None:
        """The engines' profile batch maximum (None for ONNX graphs, which take any batch)."""
        return None if self.profile_ranges is None else self.profile_ranges["batch"][2]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # ONNX element type, lower case: float, int64, float16, bfloat16, ...
    shape: tuple[int | str, ...]  # numbers, or the names of dynamic axes (batch_size, sequence_length, ...)


@dataclass(frozen=True)
class GraphIo:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class IoSpec:
    """io_spec.json: every graph file's inputs and outputs."""

    graphs: dict[str, GraphIo]

    @classmethod
    def read(cls, folder: Path) -> IoSpec:
        path = Path(folder) / IO_SPEC_FILE
        try:
            return from_json(cls, {"graphs": json.loads(path.read_text())}, IO_SPEC_FILE)
        except (OSError, json.JSONDecodeError, ContractError) as error:
            raise UserError(f"cannot read {path} ({error}): export again") from None

    def write(self, folder: Path) -> None:
        write_json(Path(folder) / IO_SPEC_FILE, to_json(self.graphs))


@dataclass(frozen=True)
class GenerationIds:
    """The token ids greedy decoding needs, from the T5 config beside the generate graphs."""

    decoder_start_token_id: int
    eos_token_id: int
    pad_token_id: int

    @classmethod
    def read(cls, folder: Path) -> GenerationIds:
        path = Path(folder) / MODEL_CONFIG_FILE
        try:
            return from_json(cls, json.loads(path.read_text()), MODEL_CONFIG_FILE)
        except (OSError, json.JSONDecodeError, ContractError) as error:
            raise UserError(f"cannot read {path} ({error}): export the generate head again") from None


@dataclass(frozen=True)
class ParityVerdict:
    """What `deploy` and `serve` need of verify's parity_report.json."""

    passed: bool
    precision: str

    @classmethod
    def read(cls, export_dir: Path) -> ParityVerdict:
        path = Path(export_dir) / PARITY_REPORT_FILE
        hint = f"run `hyperexport verify {export_dir}` first"
        if not path.is_file():
            raise UserError(f"{export_dir} has no {PARITY_REPORT_FILE}: {hint}")
        try:
            return from_json(cls, json.loads(path.read_text()), PARITY_REPORT_FILE)
        except (OSError, json.JSONDecodeError, ContractError):
            raise UserError(f"{path} is not a parity report: {hint}") from None


@dataclass(frozen=True)
class ExportFolder:
    """An export folder, opened after its manifest check (tampering, truncation, another stage)."""

    path: Path
    manifest: ExportManifest

    @classmethod
    def open(cls, folder: str | Path) -> ExportFolder:
        path = require_export(folder)
        facts = sealing.stage_facts(sealing.unseal(path, STAGE))
        try:
            manifest = from_json(ExportManifest, facts, "manifest")
        except ContractError as error:
            raise UserError(f"{path} has a manifest that is not an export's ({error}): export again") from None
        if manifest.format not in FORMATS:
            raise UserError(f"{path} is {manifest.kind}; hyperexport runs ONNX exports and TensorRT engine folders: "
                            "run `hyperexport export --task <task> --format onnx`")
        return cls(path, manifest)

    @property
    def facts(self) -> TaskFacts:
        """The task.json of a single-task export (`task_facts` for either kind)."""
        if self.is_multitask:
            raise UserError(self.needs_task_message())
        return TaskFacts.read(self.path)

    @property
    def is_multitask(self) -> bool:
        return has_task_table(self.path)

    @property
    def task_table(self) -> TaskTable:
        """tasks.json of a multi-task export (`export --tasks`)."""
        if not self.is_multitask:
            raise UserError(f"{self.path} is a single-task export of {self.manifest.task}, not a multi-task one: "
                            "run `hyperexport export --tasks <a,b,...>`")
        return TaskTable.read(self.path)

    def task_facts(self, task: str | None) -> TaskFacts:
        """The facts of `task`: a multi-task export's task (which must be named), a single-task export's own."""
        if not self.is_multitask:
            facts = TaskFacts.read(self.path)
            if task is not None and task != facts.task:
                raise UserError(f"{self.path} is an export of task {facts.task}, not {task}")
            return facts
        if task is None:
            raise UserError(self.needs_task_message())
        table = self.task_table
        if task not in table.names:
            raise UserError(f"task '{task}' is not in {self.path}: its tasks are {', '.join(table.names)}")
        return table.facts(task)

    def needs_task_message(self) -> str:
        names = TaskTable.read(self.path).names
        return f"{self.path} holds {len(names)} tasks ({', '.join(names)}): name one with --task"

    @property
    def io_spec(self) -> IoSpec:
        return IoSpec.read(self.path)

    @property
    def generation_ids(self) -> GenerationIds:
        return GenerationIds.read(self.path)

    @property
    def tokenizer_dir(self) -> Path | None:
        folder = self.path / TOKENIZER_DIR
        return folder if folder.is_dir() else None

    @property
    def source_run(self) -> Path:
        return sealing.resolved_path(self.path, self.manifest.source_run)

    @property
    def source_dir(self) -> Path:
        """The ONNX graphs: the folder itself, or an engine folder's source export."""
        return self.path / ENGINE_SOURCE_DIR if self.is_engine else self.path

    @property
    def is_engine(self) -> bool:
        return self.manifest.format == "tensorrt"

    def graph_file(self, graph: str) -> Path:
        """The file that runs `graph` (an ONNX file name): the graph itself, or its plan."""
        return self.path / (plan_name(graph) if self.is_engine else graph)

    def has(self, graph: str) -> bool:
        return self.graph_file(graph).is_file()

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(head for head, graph in (("classify", CLASSIFY_GRAPH), ("generate", ENCODER_GRAPH))
                     if self.has(graph))

    def parity(self) -> ParityVerdict:
        return ParityVerdict.read(self.path)


def write_export_manifest(folder: Path, manifest: ExportManifest) -> None:
    sealing.seal(folder, STAGE, to_json(manifest))


def require_export(folder: str | Path) -> Path:
    """`folder` as a Path if it holds an export's manifest, else the one-line error (cheap: no hashing, so that
    the CLI can say it before heavy imports)."""
    path = Path(folder)
    if not (path / MANIFEST_FILE).is_file():
        raise UserError(f"no export at {path}: {_EXPORT_HINT}")
    return path
