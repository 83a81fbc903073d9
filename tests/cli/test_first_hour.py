"""What a new user sees: train ends with the test metrics beside their baselines; predict names its
labels (entailment, not 0) and says when an input is mostly unknown to the tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hyperexport_cli.main import app

TINY = Path(__file__).parents[2] / "recipes" / "tiny.yaml"
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny recipe with the demo's word-level tokenizer (it has an <unk>), trained through the CLI."""
    root = tmp_path_factory.mktemp("first-hour")
    (root / "r.yaml").write_text(TINY.read_text().replace("tokenizer: byt5", "tokenizer: demo-words"))
    result = runner.invoke(app, ["train", str(root / "r.yaml"), "--output", str(root / "run")])
    assert result.exit_code == 0, result.output
    for args in (["materialize", "--run", str(root / "run"), "--task", "rte"],
                 ["export", "--run", str(root / "run"), "--task", "rte", "--head", "classify",
                  "--output", str(root / "export")]):
        assert runner.invoke(app, args).exit_code == 0
    return root, result.stdout


def test_train_ends_with_the_test_metrics_beside_their_baselines(trained):
    root, stdout = trained
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    assert f"run finished: {root / 'run'}" in stdout and "test metrics" in stdout
    header = next(line for line in stdout.splitlines() if "baseline" in line)
    assert ["task", "metric", "model", "baseline"] == [word for word in header.replace("\u2503", " ").split()]
    for task, scores in metrics["tasks"].items():
        for name, value in scores["metrics"].items():
            row = next(line for line in stdout.splitlines() if f" {task} " in line and f" {name} " in line)
            assert f"{value:.2f}" in row and f"{scores['baseline'][name]:.2f}" in row
    assert f"average: {metrics['average']:.2f}" in stdout


def test_predict_names_the_label(trained):
    root, _ = trained
    example = '{"sentence1": "the red fox runs on the hill", "sentence2": "the fox is not red"}'
    result = runner.invoke(app, ["predict", str(root / "export"), example, "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert row["label"] in ("0", "1")
    assert row["label_name"] == {"0": "entailment", "1": "not_entailment"}[row["label"]]
    table = runner.invoke(app, ["predict", str(root / "export"), example])
    assert f"{row['label_name']} ({row['label']})" in table.stdout


def test_predict_warns_when_an_input_is_mostly_unknown_to_the_tokenizer(trained):
    root, _ = trained
    known = '{"sentence1": "the red fox runs", "sentence2": "the fox is red"}'
    gibberish = '{"sentence1": "zorp quibble flarn", "sentence2": "blix wumpf"}'
    assert "mostly unknown" not in runner.invoke(app, ["predict", str(root / "export"), known]).stderr
    result = runner.invoke(app, ["predict", str(root / "export"), gibberish])
    assert result.exit_code == 0
    assert result.stderr.strip() == ("warning: example 0 is mostly unknown to the tokenizer (5 of 7 tokens are <unk>): "
                                     "its label says little")
