"""Artifact contracts shared by every stage: file names, atomic folder writes, manifests, runs/latest.

One source of truth for the names of the files a run folder holds; every stage reads and writes them
through these constants.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

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
TASKS_DIR = "tasks"  # materialized tasks inside a run folder (written after the run's manifest)

# Per stage: the article and the fix in messages, what its manifest does not cover (added to the folder
# later, or about to be deleted), and the command that makes one.
_STAGES = {
    "train": ("a", "train again", (f"{TASKS_DIR}/", f"{CHECKPOINT_DIR}/"), "hyperexport train"),
    "materialize": ("a", "materialize the task again", (), "hyperexport materialize"),
    "export": ("an", "export it again", (PARITY_REPORT_FILE,), "hyperexport export"),
    "checkpoint": ("a", "train without --resume", (), "hyperexport train"),  # resume state in <run>.partial/
}


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
    uncovered = _STAGES[stage][2]
    return {name: digest for name, digest in file_hashes(folder).items() if not name.startswith(uncovered)}


def check_manifest(folder: Path, stage: str = "export") -> dict:
    """The manifest of a `stage` folder, after checking every file against its sha256 (tampering,
    truncation); a folder written by another stage is refused first."""
    article, again, _, make = _STAGES[stage]
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{folder} has no readable {MANIFEST_FILE}: is it {article} {stage} folder? "
                        f"If so, {again}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise UserError(f"{folder / MANIFEST_FILE} is not a manifest (no file list): {again}")
    if manifest.get("stage") != stage:
        raise UserError(f"{folder} is not {article} {stage} folder (its manifest says {manifest.get('stage')!r}): "
                        f"run `{make}` to make one")
    found, expected = sealed_files(folder, stage), manifest["files"]
    for name, digest in expected.items():
        if found.get(name) != digest:
            state = "is missing" if name not in found else "was changed (sha256 mismatch)"
            raise UserError(f"{folder / name} {state} since it was written: {again}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise UserError(f"{folder / extra[0]} is not in the manifest: remove it or {again}")
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
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file through a temporary sibling and a rename; a failed write leaves no temporary."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_manifest(folder: Path, stage: str, **facts: Any) -> dict:
    manifest = {
        "stage": stage,
        "versions": library_versions(),
        "git_commit": git_commit(),
        **facts,
        "files": sealed_files(folder, stage),
    }
    write_json(folder / MANIFEST_FILE, manifest)
    return manifest


def temporary_sibling(final: Path) -> Path:
    """A new empty folder next to `final` (same filesystem, so a rename can publish it), named
    `.<final>.<pid>.<random>`; those of processes that died (a kill, a crash) are deleted first."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; artifacts are ordinary folders
    return tmp


def remove_stale_siblings(final: Path) -> None:
    """Delete `.<final>.<pid>.*` temporaries whose process is gone (left behind by a SIGKILL)."""
    for path in final.parent.glob(f".{final.name}.*"):
        pid = path.name[len(final.name) + 2:].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            remove_path(path)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        pass
    return True


def replace_folder(source: Path, final: Path) -> None:
    """Publish `source` as `final`. An existing `final` is swapped out in one atomic step (Linux
    renameat2 RENAME_EXCHANGE) and deleted after; without that call, it is moved aside first, so a
    kill between the two renames leaves `final` absent (never partial)."""
    if final.exists() and _exchange(source, final):
        shutil.rmtree(source, ignore_errors=True)  # `source` now holds the old folder
        return
    old = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex}.old")
    if final.exists():
        os.replace(final, old)
    os.replace(source, final)
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the kernel, libc or filesystem cannot."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@functools.cache
def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


# errno values that mean "this output cannot be written here", not a bug
_WRITE_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                 errno.ENOTDIR, errno.EEXIST, errno.EISDIR}


OUTPUT_FIX = "free disk space, make the folder writable, or choose another --output"


@contextmanager
def write_errors(destination: Path, fix: str = OUTPUT_FIX, option: str = "--output") -> Iterator[None]:
    """Turn a failed write under `destination` (disk full, file size limit, read-only or unwritable
    folder, a file in the way) into a one-line UserError naming the fix (`option`: the flag that names
    another destination)."""
    from safetensors import SafetensorError

    try:
        yield
    except OSError as error:
        if error.errno not in _WRITE_ERRORS:
            raise
        if error.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
            raise UserError(f"cannot write {destination}: a file is in the way of its folder "
                            f"({error.strerror}: {error.filename}): move it, or choose another {option}") from None
        code = errno.errorcode[error.errno]
        raise UserError(f"cannot write {destination}: {error.strerror} ({code}): {fix}") from None
    except SafetensorError as error:  # safetensors reports a failed write as its own error type
        if "I/O error" not in str(error):
            raise
        reason = str(error).split("I/O error:")[-1].strip()
        raise UserError(f"cannot write {destination}: {reason}: {fix}") from None


@contextmanager
def building(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final` to fill; when the block ends without error it replaces
    `final` atomically, otherwise it is deleted. Write failures become a one-line UserError."""
    new_parent = first_missing(final.parent)
    try:
        with write_errors(final):
            tmp = temporary_sibling(final)
            try:
                yield tmp
                replace_folder(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        remove_if_empty(new_parent)
        raise


def first_missing(folder: Path) -> Path | None:
    """The outermost folder of `folder`'s path that does not exist yet (what a mkdir -p would create)."""
    missing = None
    for candidate in [folder, *folder.parents]:
        if candidate.exists() or candidate.is_symlink():
            break
        missing = candidate
    return missing


def remove_if_empty(folder: Path | None) -> None:
    """Delete `folder` if it holds no files (only empty folders): what a failed command created."""
    if folder is not None and folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
        shutil.rmtree(folder, ignore_errors=True)


def point_latest(runs_dir: Path, run_dir: Path) -> None:
    """Atomically point runs/latest at `run_dir` (a relative symlink)."""
    link = runs_dir / LATEST_LINK
    tmp = runs_dir / f".{LATEST_LINK}.{uuid.uuid4().hex}"
    os.symlink(os.path.relpath(run_dir, runs_dir), tmp)
    os.replace(tmp, link)


def resolve_run(run: str | Path | None) -> Path:
    """A run folder, or runs/latest when none is given, its files checked against its manifest;
    errors name the command that makes one."""
    path = Path(run) if run is not None else Path("runs") / LATEST_LINK
    if not path.exists():
        hint = "run `hyperexport train` first" if run is None else "check the path, or run `hyperexport train`"
        raise UserError(f"no run at {path}: {hint}")
    if not (path / WEIGHTS_FILE).is_file() or not (path / RECIPE_FILE).is_file():
        raise UserError(f"{path} is not a finished run (no {WEIGHTS_FILE} or {RECIPE_FILE}): run `hyperexport train`")
    check_manifest(path, "train")  # every file as training wrote it (materialized tasks are checked on their own)
    return path.resolve()
