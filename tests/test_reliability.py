"""Every bad input of docs/reliability.md through the real CLI: one line naming the problem and the fix,
exit code 2, no traceback, nothing written. Also a full disk and an unwritable folder in a real child
process, and a check that the doc's table and these expectations say the same thing."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import TINY_RECIPE, TinyTree, reseal, snapshot
from hyperexport.contracts import manifest as sealing
from hyperexport.contracts import names
from hyperexport.export.onnx import export_onnx
from hyperexport.interop.hyperformer import import_hyperformer
from hyperexport.recipe.load import load_recipe
from hyperexport.training.loop import train
from hyperexport_cli.main import app

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "reliability.md"
CHILD = Path(__file__).parent / "child_cli.py"
CHECKPOINT = Path(__file__).parent / "fixtures" / "hyperformer" / "hyperformer++" / "checkpoint"  # original code's
runner = CliRunner()


def tiny_text(*replacements: tuple[str, str]) -> str:
    text = TINY_RECIPE.read_text()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    return text


def build_world(tiny: TinyTree, root: Path) -> dict[str, Path]:
    """A finished tiny run with rte materialized (a copy of the session's) and exported (classify head),
    a resumable unfinished run, and a finished run on another backbone (t5-demo)."""
    recipe = load_recipe(TINY_RECIPE)
    run = tiny.copy_run_to(root / "runs" / "tiny")
    export = export_onnx(run, task="rte", head="classify", output=root / "exports" / "rte")
    partial = train(recipe, output=root / "unfinished" / "tiny", stop_after=4, progress_bar=False)
    (root / "demo.yaml").write_text(tiny_text(("config: t5-test ", "config: t5-demo "), ("max_steps: 8",
                                                                                         "max_steps: 1")))
    other = train(load_recipe(root / "demo.yaml"), output=root / "runs" / "other", progress_bar=False)
    return {"run": run, "export": export, "partial": partial, "other": other}


@pytest.fixture(scope="module")
def world(tiny_rte, tmp_path_factory):
    return build_world(tiny_rte, tmp_path_factory.mktemp("world"))


# ---- setups: each prepares files in the test's own folder (the working directory) ---------------
def copy_run(world, tmp, tasks: bool = True) -> None:
    shutil.copytree(world["run"], tmp / "run", ignore=None if tasks else shutil.ignore_patterns("tasks"))


def write_recipe(*replacements):
    return lambda world, tmp: (tmp / "r.yaml").write_text(tiny_text(*replacements))


def truncated_run_weights(world, tmp):
    copy_run(world, tmp)
    path = tmp / "run" / names.WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:1000])


def non_finite_run(world, tmp):
    copy_run(world, tmp, tasks=False)  # a run whose training diverged: consistent, but NaN inside
    path = tmp / "run" / names.WEIGHTS_FILE
    tensors = load_file(path)
    name = sorted(tensors)[0]
    tensors[name][..., 0] = float("nan")
    save_file(tensors, path)
    reseal(tmp / "run")


def copy_partial(world, tmp):
    shutil.copytree(world["partial"], tmp / "tiny.partial")


def truncated_checkpoint(world, tmp):
    copy_partial(world, tmp)
    path = tmp / "tiny.partial" / names.CHECKPOINT_DIR / "trainable.safetensors"
    path.write_bytes(path.read_bytes()[:100])


def edited_task(world, tmp):
    copy_run(world, tmp)
    task_json = tmp / "run" / "tasks" / "rte" / "task.json"
    task_json.write_text(task_json.read_text().replace("rte", "sst2"))


def copy_export(edit: Callable[[bytes], bytes]):
    def setup(world, tmp):
        shutil.copytree(world["export"], tmp / "export")
        graph = tmp / "export" / "classify_model.onnx"
        graph.write_bytes(edit(graph.read_bytes()))
    return setup


def a_file(world, tmp):
    (tmp / "file").write_text("in the way")


def existing(name):
    return lambda world, tmp: (tmp / name).mkdir(parents=True)


def write_file(name: str, text: str):
    return lambda world, tmp: (tmp / name).write_text(text)


def scitail_rows(count: int):
    def setup(world, tmp):
        from hyperexport.data.demo import demo_examples

        (tmp / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in demo_examples("scitail", "train",
                                                                                                count, 0)))
    return setup


def verified_export(report: dict, edit: Callable[[bytes], bytes] = lambda data: data):
    """A copy of the export with `report` as its parity_report.json (as if verify had written it)."""
    def setup(world, tmp):
        copy_export(edit)(world, tmp)
        (tmp / "export" / names.PARITY_REPORT_FILE).write_text(json.dumps(report))
    return setup


class Payload:
    """A pickled object that would print if unpickled (torch.load(weights_only=True) must refuse it)."""

    def __reduce__(self):
        return print, ("unpickled",)


def copy_checkpoint(edit: Callable[[Path], None]):
    """A copy of the original-code checkpoint (hyperformer++ fixture) as checkpoint/, then `edit(folder)`."""
    def setup(world, tmp):
        edit(Path(shutil.copytree(CHECKPOINT, tmp / "checkpoint")))
    return setup


def edit_json(name: str, change: Callable[[dict], object]):
    def edit(folder: Path):
        (folder / name).write_text(json.dumps(change(json.loads((folder / name).read_text()))))
    return edit


@dataclass
class Case:
    id: str
    args: list[str]
    message: str  # {run}, {export}, {other}, {tmp}, {tiny} are filled in
    setup: Callable | None = None


TINY = "{tiny}"
CASES = [
    Case("recipe-missing", ["train", "no/such.yaml"],
         "no recipe at no/such.yaml: pass a path to a YAML recipe (see recipes/)"),
    Case("recipe-invalid-yaml", ["train", "r.yaml"],
         "recipe r.yaml: invalid YAML at line 3, column 1: expected the node content, but found '<stream end>'",
         lambda world, tmp: (tmp / "r.yaml").write_text("name: tiny\ntasks: [\n")),
    Case("recipe-unknown-key", ["train", "r.yaml"],
         "recipe r.yaml has 1 problem: train.max_stepz: unknown key (did you mean 'max_steps'?)",
         write_recipe(("max_steps: 8", "max_stepz: 8"))),
    Case("recipe-duplicate-key", ["train", "r.yaml"],
         "recipe r.yaml has 1 problem: line 47: duplicate key 'name'",
         write_recipe(("  seed: 42\n", "  seed: 42\nname: again\n"))),
    Case("recipe-mistyped-value", ["train", "r.yaml"],
         "recipe r.yaml has 1 problem: train.batch_size: expected an integer, got 'four'",
         write_recipe(("batch_size: 4", "batch_size: four"))),
    Case("recipe-unknown-task", ["train", "r.yaml"],
         "tasks[0]: 'rtee' is not a built-in task (did you mean 'rte'?), and a custom task must set template, "
         "labels and metric", write_recipe(("name: rte, source: demo", "name: rtee, source: demo"))),
    Case("task-not-in-run", ["materialize", "--run", "{run}", "--task", "cola"],
         "task 'cola' is not in the run tiny: its tasks are rte, sst2, mrpc"),
    Case("task-not-materialized", ["export", "--run", "{run}", "--task", "sst2", "--output", "out"],
         "no materialized task at {run}/tasks/sst2: run `hyperexport materialize --task <task>`"),
    Case("no-latest-materialize", ["materialize", "--task", "rte"],
         "no run at runs/latest: run `hyperexport train` first"),
    Case("no-latest-export", ["export", "--task", "rte"], "no run at runs/latest: run `hyperexport train` first"),
    Case("no-latest-evaluate", ["evaluate"], "no run at runs/latest: run `hyperexport train` first"),
    Case("run-of-another-backbone", ["verify", "{export}", "--run", "{other}"],
         "run {other} has backbone 't5-demo', the export was made from 't5-test': pass the run the export "
         "came from ({run})"),
    Case("resume-with-another-backbone", ["train", "r.yaml", "--output", "tiny", "--resume"],
         "the recipe differs from the one tiny.partial was started with (backbone.config: 't5-test' -> 't5-demo'): "
         "resume with the same recipe and --max-steps, or train without --resume",
         lambda world, tmp: (copy_partial(world, tmp), write_recipe(("config: t5-test ", "config: t5-demo "))(world,
                                                                                                              tmp))),
    Case("run-weights-truncated", ["evaluate", "run"],
         "run/model.safetensors was changed (sha256 mismatch) since it was written: train again",
         truncated_run_weights),
    Case("checkpoint-truncated", ["train", TINY, "--output", "tiny", "--resume"],
         "tiny.partial/checkpoint/trainable.safetensors was changed (sha256 mismatch) since it was written: "
         "train without --resume", truncated_checkpoint),
    Case("non-finite-weights", ["materialize", "--run", "run", "--task", "rte"],
         "task 'rte' has non-finite weights", non_finite_run),
    Case("materialized-task-edited", ["export", "--run", "run", "--task", "rte", "--output", "out"],
         "run/tasks/rte/task.json was changed (sha256 mismatch) since it was written: materialize the task again",
         edited_task),
    Case("onnx-edited-verify", ["verify", "export"],
         "export/classify_model.onnx was changed (sha256 mismatch) since it was written: export it again",
         copy_export(lambda data: data[:-64] + bytes(64))),
    Case("onnx-truncated-verify", ["verify", "export"],
         "export/classify_model.onnx was changed (sha256 mismatch) since it was written: export it again",
         copy_export(lambda data: data[: len(data) // 2])),
    Case("onnx-truncated-predict", ["predict", "export", "a fine film"],
         "export/classify_model.onnx was changed (sha256 mismatch) since it was written: export it again",
         copy_export(lambda data: data[: len(data) // 2])),
    Case("output-exists-train", ["train", TINY, "--output", "runs/tiny"],
         "runs/tiny already exists: pass --overwrite to replace it, or choose another --output", existing("runs/tiny")),
    Case("output-exists-materialize", ["materialize", "--run", "{run}", "--task", "rte"],
         "{run}/tasks/rte already exists: pass --overwrite to replace it"),
    Case("output-exists-export", ["export", "--run", "{run}", "--task", "rte", "--output", "out"],
         "out already exists: pass --overwrite to replace it, or choose another --output", existing("out")),
    Case("output-under-a-file-materialize", ["materialize", "--run", "{run}", "--task", "rte", "--output", "file/rte"],
         "cannot write file/rte: a file is in the way of its folder (File exists: file): move it, "
         "or choose another --output", a_file),
    Case("output-under-a-file-export", ["export", "--run", "{run}", "--task", "rte", "--output", "file/rte"],
         "cannot write file/rte: a file is in the way of its folder (File exists: file): move it, "
         "or choose another --output", a_file),
    Case("output-under-a-file-train", ["train", TINY, "--output", "file/tiny"],
         "cannot write file/tiny.partial: a file is in the way of its folder (Not a directory: file/tiny.partial): "
         "move it, or choose another --output", a_file),
    # export --format tensorrt and --precision: refused before the GPU check, so the same on every machine
    Case("export-unknown-format", ["export", "--run", "{run}", "--task", "rte", "--format", "tflite", "--output",
                                   "out"],
         "invalid value for '--format': 'tflite' is not one of 'onnx', 'tensorrt'"),
    Case("export-unknown-precision", ["export", "--run", "{run}", "--task", "rte", "--precision", "fp64", "--output",
                                      "out"],
         "invalid value for '--precision': 'fp64' is not one of 'fp32', 'fp16', 'bf16', 'int8'"),
    Case("tensorrt-int8", ["export", "--run", "{run}", "--task", "rte", "--format", "tensorrt", "--precision", "int8",
                           "--output", "out"],
         "precision 'int8' is not available for tensorrt: use fp32, fp16, bf16 (int8 is an ONNX Runtime CPU export: "
         "--format onnx --precision int8)"),
    Case("tensorrt-batch-not-a-range", ["export", "--run", "{run}", "--task", "rte", "--format", "tensorrt",
                                        "--batch", "1:8", "--output", "out"],
         "--batch '1:8' is not min:opt:max: write three whole numbers, e.g. --batch 1:8:32"),
    Case("tensorrt-seq-out-of-order", ["export", "--run", "{run}", "--task", "rte", "--format", "tensorrt",
                                       "--seq", "64:8:128", "--output", "out"],
         "--seq '64:8:128': need min <= opt <= max, e.g. --seq 64:64:128"),
    Case("tensorrt-seq-too-short", ["export", "--run", "{run}", "--task", "rte", "--format", "tensorrt",
                                    "--seq", "1", "--output", "out"],
         "--seq '1': max must be at least 2 (one source token and </s>; "
         "generation needs a past of at least one token)"),
    Case("output-exists-export-tensorrt", ["export", "--run", "{run}", "--task", "rte", "--format", "tensorrt",
                                           "--output", "out"],
         "out already exists: pass --overwrite to replace it, or choose another --output", existing("out")),
    # deploy
    Case("deploy-unknown-format", ["deploy", "--task", "rte", "--format", "tflite"],
         "invalid value for '--format': 'tflite' is not one of 'onnx', 'tensorrt'"),
    Case("deploy-no-export", ["deploy", "--task", "rte"],
         "no export at exports/rte/tensorrt: run `hyperexport export --task rte --format tensorrt` and "
         "`hyperexport verify exports/rte/tensorrt`"),
    Case("deploy-not-verified", ["deploy", "--task", "rte", "--format", "onnx", "--export", "{export}"],
         "{export} has no parity_report.json: run `hyperexport verify {export}` first"),
    Case("deploy-parity-failed", ["deploy", "--task", "rte", "--format", "onnx", "--export", "export"],
         "export failed verify (see export/parity_report.json): fix the export and verify it before deploying",
         verified_export({"passed": False, "precision": "fp32"})),
    Case("deploy-parity-of-another-precision", ["deploy", "--task", "rte", "--format", "onnx", "--export", "export"],
         "export/parity_report.json is for precision fp16, the export is fp32: run `hyperexport verify export` first",
         verified_export({"passed": True, "precision": "fp16"})),
    Case("deploy-another-format", ["deploy", "--task", "rte", "--format", "tensorrt", "--export", "{export}"],
         "{export} is an ONNX export of rte, not a TensorRT engine folder of rte: pass the matching --export"),
    Case("deploy-edited-export", ["deploy", "--task", "rte", "--format", "onnx", "--export", "export"],
         "export/classify_model.onnx was changed (sha256 mismatch) since it was written: export it again",
         verified_export({"passed": True, "precision": "fp32"}, lambda data: data[: len(data) // 2])),
    Case("output-under-a-file-deploy", ["deploy", "--task", "rte", "--format", "onnx", "--export", "export",
                                        "--triton-repo", "file/repo"],
         "cannot write file/repo: a file is in the way of its folder (Not a directory: file/repo): move it, "
         "or choose another --triton-repo",
         lambda world, tmp: (verified_export({"passed": True, "precision": "fp32"})(world, tmp), a_file(world, tmp))),
    # serve: refused before any server starts
    Case("serve-no-export", ["serve", "nowhere"], "no export at nowhere: run `hyperexport export --task <task>` first"),
    Case("serve-not-verified", ["serve", "{export}"],
         "{export} has no parity_report.json: run `hyperexport verify {export}` first"),
    Case("serve-parity-failed", ["serve", "export"],
         "export failed verify (see export/parity_report.json): fix the export and verify it before serving",
         verified_export({"passed": False, "precision": "fp32"})),
    Case("serve-parity-of-another-precision", ["serve", "export"],
         "export/parity_report.json is for precision fp16, the export is fp32: run `hyperexport verify export` first",
         verified_export({"passed": True, "precision": "fp16"})),
    Case("serve-edited-export", ["serve", "export"],
         "export/classify_model.onnx was changed (sha256 mismatch) since it was written: export it again",
         verified_export({"passed": True, "precision": "fp32"}, lambda data: data[: len(data) // 2])),
    Case("serve-one-name-twice", ["serve", "export", "export"],
         "two exports would be served as rte: name them, e.g. rte_2=EXPORT",
         verified_export({"passed": True, "precision": "fp32"})),
    Case("serve-bad-name", ["serve", "rte/x=export"],
         "'rte/x' cannot name served models: use letters, digits, '_', '.' and '-'",
         verified_export({"passed": True, "precision": "fp32"})),
    Case("serve-port-out-of-range", ["serve", "export", "--http-port", "70000"],
         "invalid value for '--http-port': input should be less than or equal to 65535"),
    Case("serve-no-exports", ["serve"], "missing argument 'exports'"),
    Case("predict-url-not-host-port", ["predict", "rte", "--url", "http://localhost:8000/v2", "x"],
         "--url 'http://localhost:8000/v2' is not HOST:PORT (gRPC) or http://HOST:PORT"),
    Case("predict-url-no-server", ["predict", "rte", "--url", "127.0.0.1:9", "x"],
         "no server answers at 127.0.0.1:9"),
    # bench: refused before anything is built or timed
    Case("bench-batch-not-sizes", ["bench", "--run", "{run}", "--task", "rte", "--batch", "0,x"],
         "--batch '0,x' is not a comma-separated list of positive integers (e.g. 1,8,32)"),
    Case("bench-unknown-head", ["bench", "--run", "{run}", "--task", "rte", "--head", "score"],
         "unknown head 'score': use classify or generate"),
    Case("bench-seq-too-short", ["bench", "--run", "{run}", "--task", "rte", "--seq", "1"],
         "invalid value for '--seq': input should be greater than or equal to 2"),
    Case("bench-unknown-backbone", ["bench", "--task", "rte", "--backbone", "t5-huge"],
         "unknown backbone 't5-huge': use one of t5-base, t5-demo, t5-large, t5-small, t5-test"),
    Case("no-latest-bench", ["bench", "--task", "rte"], "no run at runs/latest: run `hyperexport train` first"),
    Case("bench-task-not-in-run", ["bench", "--run", "{run}", "--task", "cola"],
         "task 'cola' is not in the run tiny: its tasks are rte, sst2, mrpc"),
    Case("bench-tensorrt-not-engines", ["bench", "--run", "{run}", "--task", "rte", "--tensorrt", "{export}"],
         "{export} is an ONNX export, not TensorRT engines: run `hyperexport export --task <task> --format tensorrt`"),
    # adapt (bad data files and requests: tests/training/test_adapt.py)
    Case("adapt-no-data", ["adapt", "{run}", "--task", "scitail"],
         "missing option '--data'"),
    Case("no-latest-adapt", ["adapt", "--task", "scitail", "--data", "rows.jsonl"],
         "no run at runs/latest: run `hyperexport train` first", scitail_rows(8)),
    Case("adapt-tune-in-place", ["adapt", "{run}", "--task", "scitail", "--data", "rows.jsonl", "--tune", "hypernet"],
         "--tune hypernet changes every task of the run: write the result to a new run with --output DIR",
         scitail_rows(8)),
    Case("output-exists-adapt", ["adapt", "{run}", "--task", "scitail", "--data", "rows.jsonl", "--output", "out"],
         "{tmp}/out already exists: pass --overwrite to replace it, or choose another --output",
         lambda world, tmp: (scitail_rows(8)(world, tmp), existing("out")(world, tmp))),
    Case("adapt-nothing-to-measure", ["adapt", "{run}", "--task", "scitail", "--data", "rows.jsonl", "--shots", "2"],
         "adapt needs at least 2 labelled examples to measure the task on: pass --eval-data FILE, or give --data "
         "more rows than --shots", scitail_rows(2)),
    Case("adapt-run-without-tokenizer", ["adapt", "imported", "--task", "scitail", "--data", "rows.jsonl"],
         "run imported has no tokenizer (it was imported without one), which adapt needs for the examples' text: "
         "import the checkpoint again with --tokenizer",
         lambda world, tmp: (scitail_rows(8)(world, tmp), import_hyperformer(CHECKPOINT, output=tmp / "imported"))),
    # import-hyperformer (unknown and missing keys: tests/interop/test_import_hyperformer.py)
    Case("import-no-checkpoint", ["import-hyperformer", "no/such"],
         "no checkpoint folder at no/such: pass the original's output_dir"),
    Case("output-exists-import", ["import-hyperformer", "{checkpoint}", "--output", "runs/imported"],
         "runs/imported already exists: pass --overwrite to replace it, or choose another --output",
         existing("runs/imported")),
    Case("import-no-weights", ["import-hyperformer", "checkpoint", "--output", "runs/imported"],
         "checkpoint holds neither model.safetensors nor pytorch_model.bin: pass the original's output_dir",
         copy_checkpoint(lambda folder: (folder / "pytorch_model.bin").unlink())),
    Case("import-weights-truncated", ["import-hyperformer", "checkpoint", "--output", "runs/imported"],
         "cannot read checkpoint/pytorch_model.bin: PytorchStreamReader failed reading zip archive: "
         "failed finding central directory: the file is damaged or not a checkpoint; copy the original's weights again",
         copy_checkpoint(lambda folder: (folder / "pytorch_model.bin").write_bytes(
             (folder / "pytorch_model.bin").read_bytes()[:1000]))),
    Case("import-pickled-payload", ["import-hyperformer", "checkpoint", "--output", "runs/imported"],
         "cannot read checkpoint/pytorch_model.bin: it holds objects other than tensors, which are refused without "
         "being run (Weights only load failed): pass a checkpoint of plain tensors",
         copy_checkpoint(lambda folder: torch.save({"shared.weight": torch.zeros(1), "payload": Payload()},
                                                   folder / "pytorch_model.bin"))),
    Case("import-no-training-args", ["import-hyperformer", "checkpoint", "--output", "runs/imported"],
         "checkpoint needs one training-arguments JSON (the configs/*.json the original ran with; found none): "
         "copy it there or pass --training-args", copy_checkpoint(lambda folder: (folder / "args.json").unlink())),
    Case("import-training-args-not-an-object", ["import-hyperformer", "{checkpoint}", "--training-args", "list.json",
                                                "--output", "runs/imported"],
         "list.json is a list, not a JSON object of training arguments: pass the configs/*.json the original ran with",
         write_file("list.json", "[1, 2]")),
    Case("import-training-args-mistyped", ["import-hyperformer", "checkpoint", "--output", "runs/imported"],
         "checkpoint/args.json: reduction_factor must be a positive whole number, got 'four'",
         copy_checkpoint(edit_json("args.json", lambda args: {**args, "reduction_factor": "four"}))),
    Case("import-config-not-json", ["import-hyperformer", "checkpoint", "--output", "runs/imported"],
         "cannot read the original's config.json at checkpoint/config.json: Expecting value: line 1 column 1 (char 0)",
         copy_checkpoint(lambda folder: (folder / "config.json").write_text("not json"))),
    Case("import-config-not-an-object", ["import-hyperformer", "checkpoint", "--output", "runs/imported"],
         "checkpoint/config.json is a list, not a JSON object: copy the original's config.json there",
         copy_checkpoint(lambda folder: (folder / "config.json").write_text("[]"))),
    Case("import-config-mistyped", ["import-hyperformer", "checkpoint", "--output", "runs/imported"],
         "checkpoint/config.json does not describe a T5 that can be built (KeyError: 'swishy'): copy the original's "
         "config.json there",
         copy_checkpoint(edit_json("config.json", lambda config: {**config, "feed_forward_proj": "swishy"}))),
    Case("import-config-zero-heads", ["import-hyperformer", "checkpoint", "--output", "runs/imported"],
         "checkpoint/config.json does not describe a T5 that can be built (ZeroDivisionError: 0.0 cannot be raised to "
         "a negative power): copy the original's config.json there",
         copy_checkpoint(edit_json("config.json", lambda config: {**config, "num_heads": 0}))),
]


def fill(text: str, names: dict) -> str:
    for name, value in names.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def names_of(world, tmp: Path | None = None) -> dict:
    return {**world, "tiny": TINY_RECIPE, "checkpoint": CHECKPOINT, **({"tmp": tmp} if tmp else {})}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused(world, tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    if case.setup:
        case.setup(world, tmp_path)
    before, world_before = snapshot(tmp_path), {k: snapshot(v) for k, v in world.items()}
    names = names_of(world, tmp_path)
    result = runner.invoke(app, [fill(arg, names) for arg in case.args])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fill(case.message, names) in lines[0]
    assert "Traceback" not in result.output and result.stdout == ""
    assert snapshot(tmp_path) == before  # nothing written, not even a temporary
    assert {k: snapshot(v) for k, v in world.items()} == world_before


# ---- a full disk and an unwritable folder, in a real child process -------------------------------------
def run_child(invocations: list[list[str]], cwd: Path, env: dict | None = None) -> list[dict]:
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    done = subprocess.run([sys.executable, str(CHILD), json.dumps(invocations)], cwd=cwd, env=child_env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_one_line_error(result: dict, message: str) -> None:
    assert result["exit_code"] == 2 and not result["traceback"], result
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result["stderr"]


FULL_DISK = {  # command -> its one line, or its end after the run's absolute path (as in docs/reliability.md)
    "train": "cannot write runs/tiny.partial: File too large (EFBIG): free disk space, make the folder writable, "
             "or choose another --output",
    "materialize": "/run/tasks/rte: File too large (EFBIG): free disk space, make the folder writable, "
                   "or choose another --output",
    "export": "cannot write exports/rte/onnx: File too large (EFBIG): free disk space, make the folder writable, "
              "or choose another --output",
    "adapt": "/run: File too large (EFBIG): free disk space, make the folder writable, or choose another --output",
}


@pytest.mark.slow  # a child process that imports torch
def test_a_full_disk_is_one_line_and_leaves_nothing(world, tmp_path):
    """RLIMIT_FSIZE 20 kB: the child's first write past 20 kB fails with EFBIG, as on a full disk. The tiny
    backbone (215 kB), the rte adapters (24 kB), the classify graph (~480 kB) and the run's trained tensors
    that adapt rewrites (108 kB; it hard-links the backbone) are all larger."""
    run = tmp_path / "run"
    shutil.copytree(world["run"], run, ignore=shutil.ignore_patterns("tasks"))
    scitail_rows(8)(world, tmp_path)
    results = run_child([["train", str(TINY_RECIPE), "--output", "runs/tiny"],
                         ["materialize", "--run", "run", "--task", "rte"],
                         ["export", "--run", str(world["run"]), "--task", "rte", "--head", "classify"],
                         ["adapt", "run", "--task", "scitail", "--data", "rows.jsonl", "--shots", "4", "--steps", "2",
                          "--json"]],
                        cwd=tmp_path, env={"HX_FSIZE": str(20_000)})
    for result, command in zip(results, ["train", "materialize", "export", "adapt"], strict=True):
        assert_one_line_error(result, FULL_DISK[command])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl", "run"]  # no runs/, no exports/, no temporaries
    assert not (run / "tasks").exists() or not any((run / "tasks").iterdir())
    sealing.unseal(run, "train")


DENIED = {"EPERM": "Operation not permitted (EPERM)", "EACCES": "Permission denied (EACCES)"}
UNWRITABLE = {  # command -> its one line, {denied} one of DENIED (verbatim in docs/reliability.md)
    "train": "cannot write locked/tiny.partial: {denied}: free disk space, make the folder writable, "
             "or choose another --output",
    "materialize": "cannot write locked/rte: {denied}: free disk space, make the folder writable, "
                   "or choose another --output",
    "export": "cannot write locked/rte: {denied}: free disk space, make the folder writable, "
              "or choose another --output",
    "verify": "cannot write locked/parity_report.json: {denied}: free disk space or make the export folder writable",
}


@contextmanager
def unwritable(folder: Path, exists: bool = False):
    """`folder` made unwritable for this process: mode 555, or for root (who ignores modes) the
    immutable attribute (chattr +i), which root cannot write through either; skipped where neither works."""
    folder.mkdir(exist_ok=exists)
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)],
                                                          capture_output=True).returncode:
        pytest.skip("root, and this filesystem has no immutable attribute")
    try:
        yield folder
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_an_unwritable_output_folder_is_one_line_and_leaves_nothing(world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    denied = DENIED["EPERM" if os.geteuid() == 0 else "EACCES"]
    with unwritable(tmp_path / "locked") as locked:
        for command, args in [("train", ["train", str(TINY_RECIPE), "--output", "locked/tiny"]),
                              ("materialize", ["materialize", "--run", str(world["run"]), "--task", "rte",
                                               "--output", "locked/rte"]),
                              ("export", ["export", "--run", str(world["run"]), "--task", "rte", "--output",
                                          "locked/rte"])]:
            result = runner.invoke(app, args)
            assert result.exit_code == 2, result.output
            assert result.stderr.strip() == "error: " + UNWRITABLE[command].replace("{denied}", denied)
        assert list(locked.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"]
    shutil.rmtree(tmp_path / "locked")
    shutil.copytree(world["export"], tmp_path / "locked")  # verify writes its report into the export
    with unwritable(tmp_path / "locked", exists=True):
        result = runner.invoke(app, ["verify", "locked", "--run", str(world["run"])])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == "error: " + UNWRITABLE["verify"].replace("{denied}", denied)
    sealing.unseal(tmp_path / "locked", "export")


# ---- the doc's table says what the tests check --------------------------------------------------------
ROW = re.compile(r"^\|\s*(?P<input>[^|]+?)\s*\|\s*`(?P<command>[^`]+)`\s*\|\s*``\s(?P<message>.+?)\s``\s*\|"
                 r"\s*`(?P<test>[^`]+)`\s*\|$")


def doc_rows() -> list[dict]:
    """The rows of the doc's bad-input table; every line of that table must parse."""
    lines = DOC.read_text().splitlines()
    start = lines.index("| Bad input | Command | Message | Test |") + 2
    table = lines[start:lines.index("", start)]
    unparsed = [line for line in table if not ROW.match(line)]
    assert not unparsed, f"rows of docs/reliability.md that do not parse: {unparsed}"
    return [ROW.match(line).groupdict() for line in table]


def string_constants(path: Path) -> list[str]:
    """Every string literal of a test module (implicitly concatenated literals come out joined)."""
    return [node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_the_doc_table_matches_the_tests():
    rows = doc_rows()
    assert len(rows) >= len(CASES)
    by_test = {row["test"]: row for row in rows}
    for case in CASES:  # every case is in the doc, with the message this module asserts
        row = by_test.get(f"tests/test_reliability.py::test_bad_input_is_refused[{case.id}]")
        assert row is not None, f"docs/reliability.md has no row for {case.id}"
        assert row["message"] == case.message, case.id
    for row in rows:  # every row names a test that exists and asserts the row's message
        path, _, name = row["test"].partition("::")
        function = name.split("[")[0]
        assert f"def {function}(" in (ROOT / path).read_text(), row["test"]
        literals = string_constants(ROOT / path)
        # "…" stands for text the test does not pin (a path, another library's wording), also at either end
        for fragment in filter(None, (part.strip() for part in row["message"].split("…"))):
            assert any(fragment in literal for literal in literals), f"{row['test']} does not assert {fragment!r}"
