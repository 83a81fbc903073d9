"""Untrusted files run no code: the package's sources hold none of the patterns that would (a grep that
fails on a regression), a pickled payload in a checkpoint is refused unexecuted, and a recipe's YAML
tags construct nothing."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from conftest import TINY_RECIPE, reseal
from hyperexport.contracts import names
from hyperexport.errors import UserError
from hyperexport.recipe.load import load_recipe
from hyperexport.training.loop import train

ROOT = Path(__file__).parents[1]
SOURCES = sorted([*(ROOT / "hyperexport").rglob("*.py"), *(ROOT / "cli").rglob("*.py")])

# pattern -> why it is forbidden, and an example line it must catch (so the check itself can fail)
FORBIDDEN = {
    r"\byaml\.(load|load_all|unsafe_load|full_load)\(": ("YAML without the safe loader", "yaml.load(text)"),
    r"\b(Unsafe|Full)?Loader\s*=\s*yaml\.(Unsafe|Full)?Loader\b": ("an unsafe YAML loader", "Loader=yaml.Loader"),
    r"(import\s+|from\s+|\b)(c?pickle|dill|cloudpickle|marshal|shelve)(\s+import|\.\w+|\s*$|\s*,)":
        ("pickle executes code on load", "import pickle"),  # code, not the word in prose
    r"\bjoblib\.load\(": ("joblib unpickles", "joblib.load(path)"),
    r"allow_pickle\s*=\s*True": ("numpy unpickling", "np.load(path, allow_pickle=True)"),
    r"trust_remote_code\s*=\s*True": ("runs a model repository's code", "from_pretrained(x, trust_remote_code=True)"),
    r"(?<![\w.])(eval|exec|compile)\(": ("runs a string as code", "eval(config['x'])"),
    r"(?<![\w.])__import__\(|importlib\.import_module\(": ("imports a name from data", "importlib.import_module(name)"),
    r"shell\s*=\s*True": ("a shell command line", "subprocess.run(cmd, shell=True)"),
    r"torch\.load\((?![^)]*weights_only\s*=\s*True)": ("unpickles without weights_only=True", "torch.load(path)"),
}


@pytest.mark.parametrize("pattern", FORBIDDEN, ids=[why for why, _ in FORBIDDEN.values()])
def test_no_source_file_holds_a_pattern_that_runs_untrusted_code(pattern):
    why, example = FORBIDDEN[pattern]
    assert re.search(pattern, example), f"the pattern for {why!r} does not catch its own example"
    assert SOURCES and len(SOURCES) > 20
    hits = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            for path in SOURCES for number, line in enumerate(path.read_text().splitlines(), start=1)
            if re.search(pattern, line) and not line.lstrip().startswith("#")]
    assert not hits, f"{why}: " + "; ".join(hits)


def test_the_one_torch_load_is_weights_only():
    calls = [line for path in SOURCES for line in path.read_text().splitlines() if "torch.load(" in line]
    assert calls and all("weights_only=True" in line for line in calls)


class Payload:
    """Unpickling this runs os.system: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickled_payload_in_a_checkpoint_is_refused_without_running(tmp_path):
    recipe = load_recipe(TINY_RECIPE)
    partial = train(recipe, output=tmp_path / "tiny", stop_after=4, progress_bar=False)
    marker = tmp_path / "payload-ran"
    torch.save({"optimizer": Payload(marker)}, partial / names.CHECKPOINT_DIR / "state.pt")
    reseal(partial / names.CHECKPOINT_DIR)  # a sha256 is no signature: whoever edits can rewrite it
    with pytest.raises(UserError, match=r"cannot read .*state.pt: Weights only load failed"):
        train(recipe, output=tmp_path / "tiny", resume=True, progress_bar=False)
    assert not marker.exists()


def test_a_python_tag_in_a_recipe_constructs_nothing(tmp_path):
    marker = tmp_path / "tag-ran"
    path = tmp_path / "r.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\ntasks: []\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_recipe(path)
    assert not marker.exists()
