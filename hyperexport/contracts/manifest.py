"""The sealed manifest every stage's folder carries: `manifest.json` holds the stage, the library
versions and git commit that wrote it, the stage's typed facts, and the sha256 of every file.

`seal` writes it last; `unseal` checks every file against it (tampering, truncation, a file added
or missing) and refuses a folder of another stage, before anything in the folder is used.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperexport.contracts.names import CHECKPOINT_DIR, MANIFEST_FILE, PARITY_REPORT_FILE, TASKS_DIR
from hyperexport.contracts.publish import write_json
from hyperexport.errors import UserError


@dataclass(frozen=True)
class Stage:
    article: str  # "a" / "an", for messages
    again: str  # the fix for a damaged folder
    uncovered: tuple[str, ...]  # path prefixes the manifest does not cover (added later, or to be deleted)
    make: str  # the command that makes such a folder


STAGES = {
    "train": Stage("a", "train again", (f"{TASKS_DIR}/", f"{CHECKPOINT_DIR}/"), "hyperexport train"),
    "materialize": Stage("a", "materialize the task again", (), "hyperexport materialize"),
    "export": Stage("an", "export it again", (PARITY_REPORT_FILE,), "hyperexport export"),
    "checkpoint": Stage("a", "train without --resume", (), "hyperexport train"),  # resume state in <run>.partial/
}
ENVELOPE = ("stage", "versions", "git_commit", "files")  # the keys that are not the stage's facts


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


def sealed_files(folder: Path, stage: str) -> dict[str, str]:
    """`file_hashes` of the files a `stage` manifest covers."""
    uncovered = STAGES[stage].uncovered
    return {name: digest for name, digest in file_hashes(folder).items() if not name.startswith(uncovered)}


def seal(folder: Path, stage: str, facts: dict[str, Any]) -> dict[str, Any]:
    """Write `folder`'s manifest: envelope, `facts`, and the sha256 of every covered file."""
    manifest = {"stage": stage, "versions": library_versions(), "git_commit": git_commit(), **facts,
                "files": sealed_files(folder, stage)}
    write_json(folder / MANIFEST_FILE, manifest)
    return manifest


def unseal(folder: Path, stage: str) -> dict[str, Any]:
    """The manifest of a `stage` folder, after checking every file against its sha256; a folder
    written by another stage is refused first."""
    kind = STAGES[stage]
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{folder} has no readable {MANIFEST_FILE}: is it {kind.article} {stage} folder? "
                        f"If so, {kind.again}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise UserError(f"{folder / MANIFEST_FILE} is not a manifest (no file list): {kind.again}")
    if manifest.get("stage") != stage:
        raise UserError(f"{folder} is not {kind.article} {stage} folder (its manifest says {manifest.get('stage')!r}): "
                        f"run `{kind.make}` to make one")
    found, expected = sealed_files(folder, stage), manifest["files"]
    for name, digest in expected.items():
        if found.get(name) != digest:
            state = "is missing" if name not in found else "was changed (sha256 mismatch)"
            raise UserError(f"{folder / name} {state} since it was written: {kind.again}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise UserError(f"{folder / extra[0]} is not in the manifest: remove it or {kind.again}")
    return manifest


def stage_facts(manifest: dict[str, Any]) -> dict[str, Any]:
    """The stage's own facts of a manifest (the envelope left out)."""
    return {key: value for key, value in manifest.items() if key not in ENVELOPE}


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


def relative_path(target: Path, folder: Path) -> str:
    """`target` as a path relative to `folder` (manifests store these, so folders can move together)."""
    import os

    return Path(os.path.relpath(Path(target).resolve(), Path(folder).resolve())).as_posix()


def resolved_path(folder: Path, stored: str) -> Path:
    """A path a manifest in `folder` stored (relative to it; an absolute one from older manifests as is)."""
    return (Path(folder) / stored).resolve()
