"""The run folder (`train`, `import-hyperformer`, `adapt`): runs/<name>/.

    recipe.yaml          the recipe it was trained with (task data paths absolute, or relative to the run)
    model.safetensors    trained tensors: hypernetworks, task embeddings, T5 layer norms
    backbone/            a random-init or imported backbone's weights (absent for a pretrained one)
    tokenizer/           absent for an import without one
    metrics.json         test metrics, best step, validation history (train only)
    manifest.json        `RunManifest` and every file's sha256
    tasks/<task>/        materialized tasks, each with its own manifest (`TaskFolder`)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hyperexport.contracts import manifest as sealing
from hyperexport.contracts.fields import ContractError, from_json, to_json
from hyperexport.contracts.names import (
    BACKBONE_DIR,
    CHECKPOINT_DIR,
    LATEST_LINK,
    METRICS_FILE,
    PARTIAL_SUFFIX,
    RECIPE_FILE,
    RUNS_DIR,
    TASKS_DIR,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
)
from hyperexport.errors import UserError
from hyperexport.recipe.schema import BackboneConfig

STAGE = "train"


@dataclass(frozen=True)
class RunManifest:
    """What a run folder's manifest says of it (besides the envelope: versions, git commit, files)."""

    recipe: str
    variant: str
    tasks: tuple[str, ...]
    parameters: dict[str, float]
    backbone: BackboneConfig | None = None
    origin: str = "train"  # or "import-hyperformer"
    synthetic_data: bool = False
    data_note: str | None = None
    source_checkpoint: str | None = None  # import-hyperformer: the original weights, relative to the run
    source_checkpoint_sha256: str | None = None
    original_arguments: dict[str, Any] | None = None
    adapted_tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # adapt: each added task's facts


@dataclass(frozen=True)
class RunFolder:
    """A finished run folder; its paths, and its manifest read and checked on demand."""

    path: Path

    @classmethod
    def resolve(cls, run: str | Path | None) -> RunFolder:
        """The run at `run`, or runs/latest when none is given, its files checked against its manifest;
        errors name the command that makes one."""
        path = Path(run) if run is not None else Path(RUNS_DIR) / LATEST_LINK
        if not path.exists():
            hint = "run `hyperexport train` first" if run is None else "check the path, or run `hyperexport train`"
            raise UserError(f"no run at {path}: {hint}")
        if not (path / WEIGHTS_FILE).is_file() or not (path / RECIPE_FILE).is_file():
            raise UserError(f"{path} is not a finished run (no {WEIGHTS_FILE} or {RECIPE_FILE}): "
                            "run `hyperexport train`")
        folder = cls(path.resolve())
        folder.manifest()  # every file as training wrote it (materialized tasks are checked on their own)
        return folder

    @staticmethod
    def partial(final: Path) -> Path:
        """The unfinished run folder of `final`: runs/<name>.partial/."""
        return final.with_name(final.name + PARTIAL_SUFFIX)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def recipe_file(self) -> Path:
        return self.path / RECIPE_FILE

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def backbone_dir(self) -> Path | None:
        """The saved backbone weights, or None for a pretrained backbone (loaded from the hub)."""
        folder = self.path / BACKBONE_DIR
        return folder if folder.is_dir() else None

    @property
    def tokenizer_dir(self) -> Path | None:
        folder = self.path / TOKENIZER_DIR
        return folder if folder.is_dir() else None

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def task_dir(self, task: str) -> Path:
        return self.path / TASKS_DIR / task

    def require_tasks(self, tasks: list[str]) -> None:
        """Refuse task names the run was not trained on (one line naming the run's tasks)."""
        known = list(self.manifest().tasks)
        unknown = [task for task in tasks if task not in known]
        if unknown:
            raise UserError(f"task '{unknown[0]}' is not in the run {self.name}: its tasks are {', '.join(known)}")

    def manifest(self) -> RunManifest:
        return read_run_manifest(self.path)

    def metrics(self) -> dict[str, Any]:
        """metrics.json: the test metrics with baselines, best step and validation history (train writes it)."""
        return json.loads((self.path / METRICS_FILE).read_text())

    def portable_backbone(self, backbone: BackboneConfig) -> BackboneConfig:
        """`backbone` with a config file inside this run written relative to it (an imported run's
        backbone/config.json), so that a moved run still names the same backbone."""
        config = Path(backbone.config)
        if config.is_absolute() and config.is_relative_to(self.path):
            return replace(backbone, config=config.relative_to(self.path).as_posix())
        return backbone

    def located_backbone(self, backbone: BackboneConfig) -> BackboneConfig:
        """The inverse of `portable_backbone`: a config path relative to this run made absolute."""
        if (self.path / backbone.config).is_file() and not Path(backbone.config).is_absolute():
            return replace(backbone, config=str(self.path / backbone.config))
        return backbone


def read_run_manifest(folder: Path) -> RunManifest:
    """The checked manifest of the run folder `folder`."""
    facts = sealing.stage_facts(sealing.unseal(folder, STAGE))
    try:
        return from_json(RunManifest, facts, "manifest")
    except ContractError as error:
        raise UserError(f"{folder} has a manifest that is not a run's ({error}): train again") from None


def write_run_manifest(folder: Path, manifest: RunManifest) -> None:
    sealing.seal(folder, STAGE, to_json(manifest))
