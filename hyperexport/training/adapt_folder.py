"""The run folder `adapt` writes, built beside its final place and published with one rename
(`publish.building`): the old run's files hard-linked (the backbone is never copied), then the new task's
rows `data/<task>/{train,validation,test}.jsonl`, `model.safetensors` with the new embedding row,
`recipe.yaml` with the task, and the manifest. A failed write (a full disk) leaves the old run as it was
and no temporary, and is one line naming the fix."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import save

from hyperexport.contracts import names, publish
from hyperexport.contracts.run import RunFolder, RunManifest, write_run_manifest
from hyperexport.training.few_shot import FewShotData


@dataclass(frozen=True)
class AdaptedRun:
    """Everything that differs between the old run and the adapted one."""

    task: str
    rows: FewShotData
    tensors: dict[str, torch.Tensor]  # the whole model.safetensors, the new row included
    recipe: dict  # recipe.yaml as plain data
    manifest: RunManifest
    drop_materialized: bool  # --tune beyond the embedding: the old tasks/ would be stale


def write_adapted_run(source: RunFolder, destination: Path, adapted: AdaptedRun) -> None:
    """Publish `source` with `adapted`'s changes as `destination` (which may be `source` itself)."""
    with publish.building(destination) as tmp:
        shutil.copytree(source.path, tmp, copy_function=_link_or_copy, dirs_exist_ok=True)
        if adapted.drop_materialized:
            shutil.rmtree(tmp / names.TASKS_DIR, ignore_errors=True)
        _write_rows(tmp / names.ADAPTED_DATA_DIR / adapted.task, adapted.rows)
        # each changed file is written to a new name and renamed over its link, so the old run's file is
        # untouched; tensors go to bytes first, so a failed write is an OSError (a one-line error)
        publish.write_bytes(tmp / names.WEIGHTS_FILE, save(adapted.tensors))
        publish.write_bytes(tmp / names.RECIPE_FILE, yaml.safe_dump(adapted.recipe, sort_keys=False).encode())
        write_run_manifest(tmp, adapted.manifest)  # materialized tasks under tasks/ carry their own manifests


def _write_rows(folder: Path, rows: FewShotData) -> None:
    folder.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in getattr(rows, split)]
        publish.write_bytes(folder / f"{split}.jsonl", "".join(lines).encode("utf-8"))


def _link_or_copy(source: str, target: str) -> None:
    """Hard-link an unchanged file (no bytes copied); copy where links are not possible."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
