"""Ctrl-C during `train` stops at the next step boundary with a checkpoint, says so in one line with the
exact command that continues, and that command finishes the run (a real process and a real SIGINT)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from hyperexport.contracts.names import CHECKPOINT_DIR, MANIFEST_FILE
from hyperexport_cli.main import app

TINY = Path(__file__).parents[2] / "recipes" / "tiny.yaml"
STEPS = 120


def _read_into(stream, buffer: list[str]) -> None:
    for char in iter(lambda: stream.read(1), ""):
        buffer.append(char)


def test_ctrl_c_keeps_a_checkpoint_and_names_the_command_that_continues(tmp_path):
    (tmp_path / "r.yaml").write_text(TINY.read_text().replace("eval_every: 4", "eval_every: 100"))
    command = [sys.executable, "-m", "hyperexport_cli", "train", "r.yaml", "--output", "runs/t", "--max-steps",
               str(STEPS)]
    child = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=_read_into, args=(child.stderr, stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not re.search(rf"\b[1-9]\d*/{STEPS}\b", "".join(stderr)) and time.monotonic() < deadline:
        time.sleep(0.02)  # until the progress bar shows a finished step
    child.send_signal(signal.SIGINT)
    child.wait(timeout=120)
    reader.join(timeout=10)
    last = "".join(stderr).replace("\r", "\n").strip().splitlines()[-1]
    assert child.returncode == 130, "".join(stderr)
    step = int(re.fullmatch(r"interrupted: training was interrupted at step (\d+) of 120; kept runs/t\.partial with a "
                            r"checkpoint at step \1; continue with: hyperexport train r\.yaml --output runs/t "
                            r"--max-steps 120 --resume", last).group(1))
    assert 0 < step < STEPS and (tmp_path / "runs" / "t.partial" / CHECKPOINT_DIR).is_dir()
    result = CliRunner().invoke(app, ["train", str(tmp_path / "r.yaml"), "--output", str(tmp_path / "runs" / "t"),
                                      "--max-steps", str(STEPS), "--resume"])  # the command it named, in-process
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "t" / MANIFEST_FILE).is_file() and not (tmp_path / "runs" / "t.partial").exists()
