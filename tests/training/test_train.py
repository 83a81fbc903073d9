"""End-to-end training on the tiny recipe: the run folder contract and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from hyperexport.contracts import manifest as sealing
from hyperexport.contracts import names
from hyperexport.errors import UserError
from hyperexport.recipe.load import load_recipe
from hyperexport.training.loop import train

TINY = Path(__file__).parents[2] / "recipes" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny_recipe():
    return load_recipe(TINY)


def run_files(run: Path) -> set[str]:
    return {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}


def test_train_writes_the_run_folder_and_points_latest(tmp_path, tiny_recipe):
    run = train(tiny_recipe, output=tmp_path / "runs" / "tiny", progress_bar=False)
    assert run == tmp_path / "runs" / "tiny"
    assert (tmp_path / "runs" / "latest").resolve() == run.resolve()
    files = run_files(run)
    for name in (names.RECIPE_FILE, names.WEIGHTS_FILE, names.METRICS_FILE, names.MANIFEST_FILE,
                 "backbone/config.json", "backbone/model.safetensors"):
        assert name in files
    assert any(f.startswith("tokenizer/") for f in files)
    assert not any(f.startswith(names.CHECKPOINT_DIR) for f in files)
    assert sorted(p.name for p in run.parent.iterdir()) == ["latest", "tiny"]  # no partial or temp folder left

    metrics = json.loads((run / names.METRICS_FILE).read_text())
    assert set(metrics["tasks"]) == {"rte", "sst2", "mrpc"}
    assert set(metrics["tasks"]["mrpc"]["metrics"]) == {"f1", "accuracy"}
    assert set(metrics["tasks"]["mrpc"]["baseline"]) == {"f1", "accuracy"}
    assert isinstance(metrics["average"], float) and metrics["split"] == "test"

    manifest = json.loads((run / names.MANIFEST_FILE).read_text())
    assert manifest["files"][names.WEIGHTS_FILE] == sealing.sha256_file(run / names.WEIGHTS_FILE)
    assert manifest["synthetic_data"] is True and manifest["tasks"] == ["rte", "sst2", "mrpc"]
    assert manifest["parameters"]["trainable_parameters"] > 0


def test_resume_continues_bit_for_bit(tmp_path, tiny_recipe):
    straight = train(tiny_recipe, output=tmp_path / "a" / "tiny", progress_bar=False)
    partial = train(tiny_recipe, output=tmp_path / "b" / "tiny", stop_after=3, progress_bar=False)
    assert partial.name == "tiny.partial" and (partial / names.CHECKPOINT_DIR).is_dir()
    assert not (tmp_path / "b" / "tiny").exists()
    resumed = train(tiny_recipe, output=tmp_path / "b" / "tiny", resume=True, progress_bar=False)

    a, b = load_file(straight / names.WEIGHTS_FILE), load_file(resumed / names.WEIGHTS_FILE)
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)
    metrics_a, metrics_b = (json.loads((r / names.METRICS_FILE).read_text()) for r in (straight, resumed))
    assert metrics_a == metrics_b


def test_an_existing_run_is_refused_without_overwrite(tmp_path, tiny_recipe):
    (tmp_path / "tiny").mkdir()
    with pytest.raises(UserError, match="already exists: pass --overwrite"):
        train(tiny_recipe, output=tmp_path / "tiny", progress_bar=False)


def test_resume_without_a_checkpoint_is_refused(tmp_path, tiny_recipe):
    with pytest.raises(UserError, match="nothing to resume"):
        train(tiny_recipe, output=tmp_path / "tiny", resume=True, progress_bar=False)
    assert list(tmp_path.iterdir()) == []
