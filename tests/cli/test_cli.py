"""The Typer app: every command's help, params figures, evaluate, and one-line bad-input errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hyperexport_cli.main import app

RECIPES = Path(__file__).parents[2] / "recipes"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


COMMANDS = sorted(typer.main.get_command(app).commands)


def test_the_app_has_every_stage_of_the_path():
    assert COMMANDS == sorted(["train", "evaluate", "params", "adapt", "import-hyperformer", "materialize", "export",
                               "verify", "predict", "deploy", "serve", "bench"])


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_plain_help_with_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example: hyperexport " + command in result.output
    assert "<bool>" not in result.output and "╭" not in result.output  # no type column, no panel


@pytest.mark.parametrize("command", COMMANDS)
def test_every_usage_error_is_one_line_and_exit_2(command):
    result = invoke(command, "--no-such-flag")
    assert result.exit_code == 2
    assert result.stderr == "error: no such option: --no-such-flag\n" and result.stdout == ""


def test_console_script_runs_in_a_real_process():
    result = subprocess.run([sys.executable, "-m", "hyperexport_cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout and "params" in result.stdout


@pytest.mark.parametrize(
    ("recipe", "percent", "ratio"),
    [
        ("glue-t5-base-hyperformer++.yaml", 0.292, 1.023),  # docs/method.md §5: the paper's 0.29% and 1.02x
        ("glue-t5-small-hyperformer++.yaml", 0.499, 1.040),  # 0.50%, 1.04x
        ("glue-t5-base-hyperformer.yaml", 6.864, 1.549),  # per-layer hypernets with the 512->128->64 projector
        ("glue-t5-base-adapters.yaml", 0.818, 1.065),  # Adapter-dagger
    ],
)
def test_params_reproduce_the_papers_table_1_columns(recipe, percent, ratio):
    result = invoke("params", RECIPES / recipe, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["trainable_per_task_percent"] == pytest.approx(percent, abs=0.0005)
    assert report["total_ratio"] == pytest.approx(ratio, abs=0.0005)
    assert report["num_tasks"] == 8


def test_params_table_for_people():
    result = invoke("params", RECIPES / "glue-t5-base-hyperformer++.yaml")
    assert result.exit_code == 0 and "222,903,552" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["params", "no/such/recipe.yaml"], "no recipe at no/such/recipe.yaml"),
        (["train", "no/such/recipe.yaml"], "no recipe at no/such/recipe.yaml"),
        (["evaluate", "no/such/run"], "no run at no/such/run"),
        (["train", RECIPES / "tiny.yaml", "--device", "tpu"],
         "invalid value for '--device': 'tpu' is not one of 'auto', 'cpu', 'cuda'"),
        (["materialize"], "name a task with --task, or pass --all"),
        (["evaluate", "--split", "dev"], "invalid value for '--split': 'dev' is not one of 'validation', 'test'"),
        (["train", "--max-steps", "0"], "invalid value for '--max-steps': input should be greater than or equal to 1"),
        (["export"], "name one task with --task, several with --tasks a,b,c (or --all), or --add-task T --to EXPORT"),
        (["no-such-command"], "no such command 'no-such-command'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_tokenizer_larger_than_the_backbone_vocabulary_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = (RECIPES / "tiny.yaml").read_text().replace("tokenizer: byt5", "tokenizer: demo-words")
    recipe = recipe.replace("config: t5-test ", "config: ./small-vocab.json ")
    (tmp_path / "small-vocab.json").write_text(json.dumps(
        {"vocab_size": 64, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4,
         "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1}))
    (tmp_path / "r.yaml").write_text(recipe)
    result = invoke("train", tmp_path / "r.yaml")
    assert result.exit_code == 2, result.output
    assert "tokenizer has 84 tokens but the backbone's vocabulary has 64" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_evaluate_without_any_run_names_the_command_that_makes_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("evaluate")
    assert result.exit_code == 2 and "run `hyperexport train` first" in result.stderr


def test_invalid_recipe_reports_every_problem_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntasks: [{name: rte, source: demo}]\ntrain: {max_stepz: 3, batch_size: two}\n")
    result = invoke("params", bad)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "max_stepz" in line and "batch_size" in line


@pytest.mark.slow
def test_train_then_evaluate_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trained = invoke("train", RECIPES / "tiny.yaml")
    assert trained.exit_code == 0, trained.output
    assert "run finished: runs/tiny" in trained.stdout
    evaluated = invoke("evaluate", "--task", "rte", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.stdout)
    assert list(result["tasks"]) == ["rte"] and "accuracy" in result["tasks"]["rte"]["metrics"]
    assert Path(result["run"]) == (tmp_path / "runs" / "tiny").resolve()
    unknown = invoke("evaluate", "--task", "cola")
    assert unknown.exit_code == 2 and "task 'cola' is not in the run tiny" in unknown.stderr
