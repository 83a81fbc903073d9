"""The artifact helpers the reliability guarantees rest on: publishing a folder, cleaning up after dead
processes, the write-error translation, manifests that name the changed file."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from hyperexport.contracts import manifest as sealing
from hyperexport.contracts import names, publish
from hyperexport.errors import UserError


def make(folder, **files):
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_replace_folder_publishes_the_new_folder_and_deletes_the_old(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(publish, "_exchange", lambda a, b: False)  # the path other systems take
    final = make(tmp_path / "out", a="old", b="old")
    new = make(tmp_path / ".out.new", a="new")
    publish.replace_folder(new, final)
    assert {p.name: p.read_text() for p in final.iterdir()} == {"a": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # neither the source nor the old one left


def test_the_atomic_exchange_is_available_here(tmp_path):
    """On this (Linux) test machine the overwrite path is the one-step swap, not the two renames."""
    a, b = make(tmp_path / "a", x="a"), make(tmp_path / "b", x="b")
    assert publish._exchange(a, b)
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def test_building_removes_the_temporary_and_new_parents_on_failure(tmp_path):
    final = tmp_path / "exports" / "rte" / "onnx"
    with pytest.raises(RuntimeError, match="half way"):
        with publish.building(final) as tmp:
            (tmp / "graph.onnx").write_text("half")
            raise RuntimeError("half way")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = make(tmp_path / f".rte.{dead_pid}.abc", f="x")
    mine = make(tmp_path / f".rte.{os.getpid()}.abc", f="x")
    other_task = make(tmp_path / f".rte-generate.{dead_pid}.abc", f="x")
    publish.remove_stale_siblings(tmp_path / "rte")
    assert not stale.exists() and mine.exists() and other_task.exists()


@pytest.mark.parametrize(("code", "text"), [
    (errno.ENOSPC, "No space left on device (ENOSPC): free disk space"),
    (errno.EROFS, "Read-only file system (EROFS): free disk space, make the folder writable"),
    (errno.ENOTDIR, "a file is in the way of its folder"),
])
def test_write_errors_name_the_problem_in_one_line(tmp_path, code, text):
    with pytest.raises(UserError, match=text.replace("(", r"\(").replace(")", r"\)")) as caught:
        with publish.write_errors(tmp_path / "out"):
            raise OSError(code, os.strerror(code), str(tmp_path / "out"))
    assert "\n" not in str(caught.value)
    with pytest.raises(OSError):  # not a write problem: a bug, it surfaces
        with publish.write_errors(tmp_path / "out"):
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))


def test_manifest_names_the_changed_missing_or_extra_file(tmp_path):
    folder = make(tmp_path / "task", **{"a.json": "1", "b.json": "2"})
    sealing.seal(folder, "materialize", {})
    assert sealing.unseal(folder, "materialize")["stage"] == "materialize"
    (folder / "a.json").write_text("3")
    with pytest.raises(UserError, match="a.json was changed .* materialize the task again"):
        sealing.unseal(folder, "materialize")
    (folder / "a.json").unlink()
    with pytest.raises(UserError, match="a.json is missing since it was written"):
        sealing.unseal(folder, "materialize")
    (folder / "a.json").write_text("1")
    (folder / "c.json").write_text("{}")
    with pytest.raises(UserError, match="c.json is not in the manifest"):
        sealing.unseal(folder, "materialize")
    with pytest.raises(UserError, match="is not an export folder .* run `hyperexport export`"):
        sealing.unseal(folder, "export")
    (folder / names.MANIFEST_FILE).write_text(json.dumps(["not", "a", "manifest"]))
    with pytest.raises(UserError, match="is not a manifest"):
        sealing.unseal(folder, "materialize")
