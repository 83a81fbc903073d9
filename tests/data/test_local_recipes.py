"""The example recipes for local data train offline on their tiny example folders, and a glue_dir path
that names a task's folder instead of the GLUE root says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hyperexport.contracts.names import METRICS_FILE
from hyperexport_cli.main import app

RECIPES = Path(__file__).parents[2] / "recipes"


@pytest.mark.parametrize("recipe, tasks", [("local-glue-dir.yaml", {"rte", "sst2"}), ("custom-jsonl.yaml", {"topic"})])
def test_the_local_data_recipes_train_and_evaluate_every_task(tmp_path, monkeypatch, recipe, tasks):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", str(RECIPES / recipe), "--output", "run"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / METRICS_FILE).read_text())
    assert set(metrics["tasks"]) == tasks and metrics["split"] == "test"


def test_a_glue_dir_path_at_a_task_folder_names_the_root(tmp_path, monkeypatch):
    recipe = (RECIPES / "local-glue-dir.yaml").read_text().replace(
        "path: ../examples/data/glue}    #", f"path: {RECIPES.parent / 'examples/data/glue/RTE'}}}    #")
    (tmp_path / "r.yaml").write_text(recipe)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "r.yaml"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: glue_dir path {RECIPES.parent / 'examples/data/glue/RTE'} is a task's "
                                     f"folder; set path to the GLUE root that holds RTE/ (here "
                                     f"{RECIPES.parent / 'examples/data/glue'})")
