"""Artifact contracts shared by every stage: file names, atomic folder writes, manifests, runs/latest.

One source of truth for the names of the files a run folder holds; every stage reads and writes them
through these constants.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from hyperexport.errors import UserError

RECIPE_FILE = "recipe.yaml"
WEIGHTS_FILE = "model.safetensors"  # trained tensors: hypernets, task embeddings, T5 layer norms
BACKBONE_DIR = "backbone"  # a random-init backbone's frozen weights (absent for pretrained backbones)
TOKENIZER_DIR = "tokenizer"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_DIR = "checkpoint"  # resumable training state, inside the unfinished run folder
PARTIAL_SUFFIX = ".partial"  # an unfinished run: runs/<name>.partial/
LATEST_LINK = "latest"
PARITY_REPORT_FILE = "parity_report.json"  # written into an export folder by `verify`, after its manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (relative posix paths), the manifest itself excluded."""
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }


def check_manifest(folder: Path, stage: str = "export") -> dict:
    """The manifest of a `stage` folder, after checking every file against its sha256 (tampering,
    truncation); a folder written by another stage is refused first."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{folder} has no readable {MANIFEST_FILE}: is it an {stage} folder?") from None
    if manifest.get("stage") != stage:
        raise UserError(f"{folder} is not an {stage} folder (its manifest says {manifest.get('stage')!r}): "
                        f"run `hyperexport {stage}` to make one")
    found, expected = file_hashes(folder), manifest.get("files", {})
    for name, digest in expected.items():
        if found.get(name) != digest:
            state = "is missing" if name not in found else "was changed (sha256 mismatch)"
            raise UserError(f"{folder / name} {state} since it was written: export it again")
    extra = sorted(set(found) - set(expected) - {PARITY_REPORT_FILE})
    if extra:
        raise UserError(f"{folder / extra[0]} is not in the manifest: remove it or export again")
    return manifest


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("hyperexport", "torch", "transformers", "accelerate", "safetensors", "onnx", "onnxruntime"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary sibling and a rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_manifest(folder: Path, stage: str, **facts: Any) -> dict:
    manifest = {
        "stage": stage,
        "versions": library_versions(),
        "git_commit": git_commit(),
        **facts,
        "files": file_hashes(folder),
    }
    write_json(folder / MANIFEST_FILE, manifest)
    return manifest


def temporary_sibling(final: Path) -> Path:
    """A new empty folder next to `final` (same filesystem, so a rename can publish it)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; artifacts are ordinary folders
    return tmp


def replace_folder(source: Path, final: Path) -> None:
    """Move `source` to `final`; an existing `final` is moved aside first and deleted after."""
    old = final.with_name(f".{final.name}.{uuid.uuid4().hex}.old")
    if final.exists():
        os.replace(final, old)
    os.replace(source, final)
    shutil.rmtree(old, ignore_errors=True)


def point_latest(runs_dir: Path, run_dir: Path) -> None:
    """Atomically point runs/latest at `run_dir` (a relative symlink)."""
    link = runs_dir / LATEST_LINK
    tmp = runs_dir / f".{LATEST_LINK}.{uuid.uuid4().hex}"
    os.symlink(os.path.relpath(run_dir, runs_dir), tmp)
    os.replace(tmp, link)


def resolve_run(run: str | Path | None) -> Path:
    """A run folder, or runs/latest when none is given; errors name the command that makes one."""
    path = Path(run) if run is not None else Path("runs") / LATEST_LINK
    if not path.exists():
        hint = "run `hyperexport train` first" if run is None else "check the path, or run `hyperexport train`"
        raise UserError(f"no run at {path}: {hint}")
    if not (path / WEIGHTS_FILE).is_file() or not (path / RECIPE_FILE).is_file():
        raise UserError(f"{path} is not a finished run (no {WEIGHTS_FILE} or {RECIPE_FILE}): run `hyperexport train`")
    return path.resolve()
