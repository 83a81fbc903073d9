"""SIGKILL in the middle of train, materialize and export: the previous artifact is intact or absent,
never partial, and the next run succeeds; a killed training resumed with --resume ends bit for bit where
an uninterrupted one does.

"Midway" is found, not timed: the child (tests/child_cli.py) runs the real command with an audit hook
that stops it at a chosen file-system event of the real code path (the second checkpoint's temporary
folder, a file inside the temporary export) and writes a marker; the test waits for the marker, then
sends SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import TINY_RECIPE
from hyperexport.contracts import manifest as sealing
from hyperexport.contracts import names
from hyperexport.export.onnx import export_onnx
from hyperexport.recipe.load import load_recipe
from hyperexport.training.loop import train
from hyperexport_cli.main import app

CHILD = Path(__file__).parent / "child_cli.py"
runner = CliRunner()
pytestmark = pytest.mark.slow  # each test starts a Python process that imports torch


def kill_midway(args: list[str], cwd: Path, event: str, pattern: str, count: int = 1, timeout: float = 300) -> str:
    """Run `hyperexport args` in a child, SIGKILL it when it reaches the `count`-th `event` on a path
    matching `pattern`; returns the path it stopped at."""
    marker = cwd / f".paused-{time.monotonic_ns()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HX_PAUSE": f"{event}|{pattern}|{count}|{marker}"}
    child = subprocess.Popen([sys.executable, str(CHILD), json.dumps([args])], cwd=cwd, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(f"the child ended before {event} {pattern} #{count}: {child.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the child did not reach {event} {pattern} #{count} in {timeout} s")
            time.sleep(0.05)
        while not marker.read_text():  # the hook writes the path, then sleeps
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    where = marker.read_text()
    marker.unlink()
    return where


def tensors_equal(a: Path, b: Path) -> bool:
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(x[k].equal(y[k]) for k in x)


def test_train_killed_midway_keeps_the_previous_run_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    """tiny: 8 steps, a checkpoint at steps 4 and 8. The kill lands while the step-8 checkpoint is being
    written (its tensors written, its optimizer state not yet), so --resume must replay steps 5-8 exactly."""
    straight = train(load_recipe(TINY_RECIPE), output=tmp_path / "straight" / "tiny", progress_bar=False)
    work = tmp_path / "work"
    shutil.copytree(straight, work / "runs" / "tiny")  # the previous run the killed one would replace
    previous = sealing.file_hashes(work / "runs" / "tiny")

    where = kill_midway(["train", str(TINY_RECIPE), "--output", "runs/tiny", "--overwrite"], work,
                        "open", "*/tiny.partial/.checkpoint.*/.state.pt.*", count=2)
    assert ".checkpoint." in where
    assert sealing.file_hashes(work / "runs" / "tiny") == previous  # intact
    sealing.unseal(work / "runs" / "tiny", "train")
    partial = work / "runs" / "tiny.partial"
    assert (partial / "checkpoint" / "state.pt").is_file()
    assert any(p.name.startswith(".checkpoint.") for p in partial.iterdir())  # the killed temporary

    monkeypatch.chdir(work)
    resumed = runner.invoke(app, ["train", str(TINY_RECIPE), "--output", "runs/tiny", "--overwrite", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    run = work / "runs" / "tiny"
    assert sorted(p.name for p in run.parent.iterdir()) == ["latest", "tiny"]
    sealing.unseal(run, "train")
    assert not any(p.name.startswith(".") for p in run.rglob("*"))  # the killed temporary did not ship
    assert tensors_equal(straight / names.WEIGHTS_FILE, run / names.WEIGHTS_FILE)
    metrics = [json.loads((r / names.METRICS_FILE).read_text()) for r in (straight, run)]
    assert metrics[0] == metrics[1]
    assert len(metrics[1]["validation_history"]) == 2  # steps 4 and 8: the replayed evaluation is not doubled


@pytest.fixture(scope="module")
def run_with_rte(tiny_rte, tmp_path_factory):
    return tiny_rte.copy_to(tmp_path_factory.mktemp("killrun")).run  # killed children must not touch the shared one


def test_materialize_killed_midway_keeps_the_previous_task_or_none(run_with_rte, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(run_with_rte, run)
    task = run / "tasks" / "rte"
    previous = sealing.file_hashes(task)
    kill_midway(["materialize", "--run", str(run), "--task", "rte", "--overwrite"], tmp_path,
                "open", "*/tasks/.rte.*/.task.json.*")  # adapters written, task.json being written
    assert sealing.file_hashes(task) == previous
    sealing.unseal(task, "materialize")
    kill_midway(["materialize", "--run", str(run), "--task", "sst2"], tmp_path, "open", "*/tasks/.sst2.*/.task.json.*")
    assert not (run / "tasks" / "sst2").exists()  # absent, not partial
    assert {p.name.split(".")[1] for p in (run / "tasks").glob(".*")} == {"rte", "sst2"}  # the killed temporaries

    monkeypatch.chdir(tmp_path)
    again = runner.invoke(app, ["materialize", "--run", str(run), "--task", "rte", "--task", "sst2", "--overwrite"])
    assert again.exit_code == 0, again.output
    for name in ("rte", "sst2"):
        sealing.unseal(run / "tasks" / name, "materialize")
    assert not list((run / "tasks").glob(".*"))  # the dead processes' temporaries were removed
    sealing.unseal(run, "train")


def test_export_killed_midway_keeps_the_previous_export(run_with_rte, tmp_path, monkeypatch):
    folder = export_onnx(run_with_rte, task="rte", head="classify", output=tmp_path / "exports" / "rte")
    previous = sealing.file_hashes(folder)
    where = kill_midway(["export", "--run", str(run_with_rte), "--task", "rte", "--head", "classify",
                         "--output", str(folder), "--overwrite"], tmp_path,
                        "open", "*/exports/.rte.*/tokenizer/*")  # the graph written, the tokenizer being saved
    assert "/tokenizer/" in where
    assert sealing.file_hashes(folder) == previous
    sealing.unseal(folder, "export")

    monkeypatch.chdir(tmp_path)
    again = runner.invoke(app, ["export", "--run", str(run_with_rte), "--task", "rte", "--head", "classify",
                                "--output", str(folder), "--overwrite"])
    assert again.exit_code == 0, again.output
    sealing.unseal(folder, "export")
    assert sorted(p.name for p in folder.parent.iterdir()) == ["rte"]
