"""Atomic writes: a file through a temporary sibling and a rename, a folder built beside its final place
and published in one step (`building`), and write failures (a full disk, a read-only folder) as
one-line `UserError`s. A killed command leaves the old result or none, never half of one."""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hyperexport.errors import UserError


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


def point_link(link: Path, target: Path) -> None:
    """Atomically point the symlink `link` at `target` (a relative link)."""
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex}")
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)
