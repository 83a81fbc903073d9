"""The README's commands, run: the set-up's test command is what CI runs, and the demo path works as written
(on a demo run trained for a few steps, so that the suite stays fast; the commands are the README's own)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
PATH_MARKER = "<!-- readme-test: path -->"
DEMO_STEPS = "20"  # the README trains the demo recipe's 1,500 steps; the path after it is the same


def bash_block_after(marker: str) -> list[str]:
    """The command lines of the first ```bash block after `marker` (comments stripped)."""
    text = README.read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index(marker):], re.S)
    assert block is not None, f"no bash block after {marker}"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def setup_commands() -> list[str]:
    return bash_block_after("## Set-up: two commands")


def test_the_readme_test_command_is_exactly_what_ci_runs():
    install_and_test = setup_commands()[1]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install_and_test in ci_lines


def test_the_readme_demo_command_trains_the_demo_and_the_path_starts_from_it():
    install_and_train = setup_commands()[0]
    assert install_and_train.endswith("&& .venv/bin/hyperexport train")
    assert bash_block_after(PATH_MARKER)[0].startswith("hyperexport materialize")


@pytest.mark.slow
def test_the_readme_path_runs_as_written(tmp_path):
    """Every line of the README's path, in order, in a fresh folder after `hyperexport train`: exit 0 each,
    verify's verdicts passed, predict's tables printed."""
    cli = Path(sys.executable).with_name("hyperexport")
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}

    def run(args: list[str]) -> str:
        done = subprocess.run([str(cli), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"hyperexport {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}"
        return done.stdout

    run(["train", "--max-steps", DEMO_STEPS])
    outputs = {}
    for line in bash_block_after(PATH_MARKER):
        words = shlex.split(line)
        assert words[0] == "hyperexport", line
        outputs[line] = run(words[1:])
    verdicts = [out for line, out in outputs.items() if line.startswith("hyperexport verify")]
    assert len(verdicts) == 2 and all(out.rstrip().endswith("parity passed") for out in verdicts)
    predictions = [out for line, out in outputs.items() if line.startswith("hyperexport predict")]
    assert len(predictions) == 2 and all("probability" in out for out in predictions)
    assert (tmp_path / "exports" / "multitask" / "onnx" / "tasks.json").is_file()
