"""A materialized task (`materialize`): <run>/tasks/<task>/.

    adapters.safetensors  `adapters.<stack>.<tensor>` [L, 2, ...] (position 0: after the feed-forward,
                          1: after self-attention; layout (out, in)) and `backbone.<name>`: the run's
                          trained T5 layer norms, so the folder plus the plain backbone is the whole task
    task.json             `TaskFacts`: template, labels, metrics, generation length, adapter facts
    manifest.json         `TaskManifest` and every file's sha256
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hyperexport.contracts import manifest as sealing
from hyperexport.contracts.fields import ContractError, from_json, to_json
from hyperexport.contracts.names import ADAPTERS_FILE, TASK_FILE
from hyperexport.contracts.publish import write_json
from hyperexport.errors import UserError
from hyperexport.recipe.schema import BackboneConfig

STAGE = "materialize"
ADAPTER_PREFIX = "adapters."  # adapters.safetensors keys: adapters.<stack>.<tensor>
BACKBONE_PREFIX = "backbone."  # and backbone.<T5 parameter name> for the trained layer norms


@dataclass(frozen=True)
class AdapterFacts:
    activation: str
    layer_norm_eps: float
    positions: tuple[str, ...]  # the position axis of the adapter tensors
    variant: str


@dataclass(frozen=True)
class TaskFacts:
    """What running a task needs besides its weights: how to format, tokenize, decode and score it."""

    task: str
    template: str
    labels: tuple[str, ...]
    metrics: tuple[str, ...]
    postprocess: str
    is_regression: bool
    max_new_tokens: int  # greedy generation length (the longest label, </s> included)
    max_source_length: int
    adapter: AdapterFacts
    label_names: tuple[str, ...] | None = None  # what each label means ("0" -> "entailment"); None: the label itself

    def label_name(self, label: str) -> str:
        """The name of a label string (itself when the task has no names, or for a generated string that is
        not one of the labels)."""
        if self.label_names is None or label not in self.labels:
            return label
        return self.label_names[self.labels.index(label)]

    @classmethod
    def read(cls, folder: Path) -> TaskFacts:
        """The `task.json` of a task or export folder (whose manifest the caller has checked)."""
        path = Path(folder) / TASK_FILE
        try:
            return from_json(cls, json.loads(path.read_text()), TASK_FILE)
        except (OSError, json.JSONDecodeError, ContractError) as error:
            raise UserError(f"cannot read {path} ({error}): materialize the task again") from None

    def write(self, folder: Path) -> None:
        write_json(Path(folder) / TASK_FILE, to_json(self))


@dataclass(frozen=True)
class TaskManifest:
    task: str
    source_run: str  # the run folder, relative to the task folder
    source_checkpoint_sha256: str
    backbone: BackboneConfig
    backbone_weights: str | None  # the run's saved backbone, relative to the task folder; None: pretrained
    parameters: dict[str, int]
    bytes: dict[str, int]


@dataclass(frozen=True)
class TaskFolder:
    """A materialized task folder, opened after its manifest check."""

    path: Path
    manifest: TaskManifest
    facts: TaskFacts

    @classmethod
    def open(cls, folder: str | Path) -> TaskFolder:
        path = Path(folder)
        if not (path / ADAPTERS_FILE).is_file() or not (path / TASK_FILE).is_file():
            raise UserError(f"no materialized task at {path}: run `hyperexport materialize --task <task>`")
        facts = sealing.stage_facts(sealing.unseal(path, STAGE))
        try:
            manifest = from_json(TaskManifest, facts, "manifest")
        except ContractError as error:
            raise UserError(f"{path} has a manifest that is not a task's ({error}): materialize it again") from None
        return cls(path, manifest, TaskFacts.read(path))

    @property
    def adapters_file(self) -> Path:
        return self.path / ADAPTERS_FILE

    @property
    def backbone_weights(self) -> Path | None:
        stored = self.manifest.backbone_weights
        return None if stored is None else sealing.resolved_path(self.path, stored)

    @property
    def run_dir(self) -> Path:
        return sealing.resolved_path(self.path, self.manifest.source_run)


def write_task_manifest(folder: Path, manifest: TaskManifest) -> None:
    sealing.seal(folder, STAGE, to_json(manifest))
