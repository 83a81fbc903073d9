"""`adapt`: a new task learned as one task embedding on a trained tiny run; everything else bit-identical,
the run rewritten atomically, the new task served by materialize/export/verify/predict, bad data refused."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from hyperexport.contracts import manifest as sealing
from hyperexport.contracts import names
from hyperexport.contracts.run import RunFolder
from hyperexport.data.demo import demo_examples
from hyperexport.recipe.load import load_recipe
from hyperexport.tasks.registry import get_task
from hyperexport.training.accelerator import accelerator_for
from hyperexport.training.adapt import adapt
from hyperexport.training.adapt_loop import train_steps
from hyperexport.training.adapt_model import EMBEDDING_KEY, RunToAdapt, adaptation_model, set_trainable
from hyperexport.training.few_shot import few_shot_indices
from hyperexport_cli.main import app

runner = CliRunner()
OLD_TASKS = ["rte", "sst2", "mrpc"]  # recipes/tiny.yaml


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def trained(tiny_rte, tmp_path_factory):
    """A trained tiny run with rte materialized (the session's, only read: tests adapt a copy), and
    held-out scitail data (shots file, eval file)."""
    root = tmp_path_factory.mktemp("adapt")
    run = tiny_rte.run
    data = write_jsonl(root / "scitail.jsonl", demo_examples("scitail", "train", 24, 0))
    eval_data = write_jsonl(root / "scitail-eval.jsonl", demo_examples("scitail", "validation", 12, 0))
    return run, data, eval_data


@pytest.fixture
def run_copy(trained, tmp_path):
    run, data, eval_data = trained
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(run, copy)
    return copy, data, eval_data


def folder_state(folder: Path) -> dict[str, str]:
    return sealing.file_hashes(folder) | {"manifest": sealing.sha256_file(folder / names.MANIFEST_FILE)}


def to_adapt(run: Path) -> RunToAdapt:
    return RunToAdapt.load(RunFolder.resolve(run), load_recipe(run / names.RECIPE_FILE), accelerator_for("cpu", "fp32"))


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_embedding_only_adaptation_keeps_hypernets_and_backbone_bit_identical(run_copy):
    run, data, eval_data = run_copy
    before = load_file(str(run / names.WEIGHTS_FILE))
    backbone_before = load_file(str(run / names.BACKBONE_DIR / "model.safetensors"))
    rte_adapters = load_file(str(run / "tasks" / "rte" / "adapters.safetensors"))

    report = adapt(run, task="scitail", data=data, eval_data=eval_data, shots=8, init_from="rte", steps=6,
                   progress_bar=False)

    after = load_file(str(run / names.WEIGHTS_FILE))
    assert set(after) == set(before)
    for name, tensor in before.items():  # every hypernetwork and layer-norm tensor, bit for bit
        if name != EMBEDDING_KEY:
            assert torch.equal(after[name], tensor), name
    assert torch.equal(after[EMBEDDING_KEY][:3], before[EMBEDDING_KEY])  # the trained tasks' rows
    assert after[EMBEDDING_KEY].shape[0] == 4
    assert not torch.equal(after[EMBEDDING_KEY][3], before[EMBEDDING_KEY][0])  # moved away from rte's start
    backbone_after = load_file(str(run / names.BACKBONE_DIR / "model.safetensors"))
    assert backbone_after.keys() == backbone_before.keys()
    assert all(torch.equal(backbone_after[k], t) for k, t in backbone_before.items())
    assert all(torch.equal(load_file(str(run / "tasks" / "rte" / "adapters.safetensors"))[k], t)
               for k, t in rte_adapters.items())

    manifest = json.loads((run / names.MANIFEST_FILE).read_text())
    assert manifest["tasks"] == [*OLD_TASKS, "scitail"] and manifest["parameters"]["num_tasks"] == 4
    facts = manifest["adapted_tasks"]["scitail"]
    assert facts["shots"] == 8 and facts["init_from"] == "rte" and facts["data"]["sha256"]
    assert report["parameters"]["added"] == report["parameters"]["trained"] == 16  # tiny: task_embedding_dim 16
    assert report["parameters"]["per_task_adapter"] > 100 * report["parameters"]["added"]
    assert [t.name for t in load_recipe(run / names.RECIPE_FILE).tasks] == [*OLD_TASKS, "scitail"]
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".")]  # no temporary sibling left


def test_the_adapt_loop_changes_only_the_embedding_in_memory(trained):
    """Every tensor of the model (frozen backbone weights and buffers included) against a snapshot."""
    run, data, _ = trained
    base = to_adapt(run)
    model = adaptation_model(base, "scitail", torch.randn(16))
    set_trainable(model, "embedding")
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    spec = get_task("scitail")
    from hyperexport.data.collate import make_examples

    examples = make_examples(spec, demo_examples("scitail", "train", 8, 0))
    losses = train_steps(base, model, examples, steps=5, learning_rate=0.1, seed=0, progress_bar=False)
    assert len(losses) == 5
    state = model.state_dict()
    changed = [k for k, v in snapshot.items() if not torch.equal(state[k], v)]
    assert changed == [EMBEDDING_KEY]


@pytest.mark.slow
def test_adapt_then_materialize_export_verify_predict_via_the_cli(run_copy, tmp_path):
    run, data, eval_data = run_copy
    adapted = invoke("adapt", run, "--task", "scitail", "--data", data, "--eval-data", eval_data, "--shots", 4,
                     "--init-from", "rte", "--steps", 4, "--json")
    assert adapted.exit_code == 0, adapted.output
    report = json.loads(adapted.stdout)
    assert report["shots"] == 4 and report["test_examples"] == 6 and set(report["test"]["adapted"]) == {"accuracy"}

    assert invoke("materialize", "--run", run, "--task", "scitail").exit_code == 0
    task_json = json.loads((run / "tasks" / "scitail" / "task.json").read_text())
    assert task_json["labels"] == ["0", "1"] and task_json["template"] == get_task("scitail").template
    export_dir = tmp_path / "exports" / "scitail" / "onnx"
    exported = invoke("export", "--run", run, "--task", "scitail", "--output", export_dir)
    assert exported.exit_code == 0, exported.output
    verified = invoke("verify", export_dir, "--json")
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["task"] == "scitail"
    example = json.dumps({"sentence1": "the red fox runs on the hill", "sentence2": "the fox is sad"})
    predicted = invoke("predict", export_dir, example, "--json")
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.stdout)[0]["label"] in ("0", "1")
    evaluated = invoke("evaluate", run, "--task", "scitail", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert evaluated.stdout and "scitail" in json.loads(evaluated.stdout)["tasks"]


def test_a_custom_csv_task_with_tune_hypernet_writes_a_new_run(run_copy, tmp_path):
    run, _, _ = run_copy
    rows = demo_examples("sst2", "train", 12, 3)
    csv_file = tmp_path / "mood.csv"
    csv_file.write_text("text,mood\n" + "".join(f"{r['sentence']},{'yes' if r['label'] else 'no'}\n" for r in rows))
    refused = invoke("adapt", run, "--task", "mood", "--data", csv_file, "--template", "review: {text}",
                     "--labels", "no,yes", "--label-field", "mood", "--tune", "hypernet")
    assert refused.exit_code == 2 and "--output" in refused.stderr
    new_run = tmp_path / "runs" / "tiny-mood"
    result = invoke("adapt", run, "--task", "mood", "--data", csv_file, "--template", "review: {text}",
                    "--labels", "no,yes", "--label-field", "mood", "--shots", 6, "--steps", 3,
                    "--tune", "hypernet", "--output", new_run)
    assert result.exit_code == 0, result.output
    old, new = load_file(str(run / names.WEIGHTS_FILE)), load_file(str(new_run / names.WEIGHTS_FILE))
    assert any(not torch.equal(old[k], new[k]) for k in old if k.startswith("generators."))
    assert not (new_run / "tasks").exists()  # the old run's materialized adapters would be stale
    task = load_recipe(new_run / names.RECIPE_FILE).tasks[-1]
    assert (task.name, task.template, task.labels, task.label_field) == ("mood", "review: {text}", ("no", "yes"),
                                                                         "mood")
    assert Path(task.path) == new_run / "data" / "mood"
    assert len((new_run / "data" / "mood" / "train.jsonl").read_text().splitlines()) == 6


BAD_ROW_FILES = {
    "empty": "",
    "not-jsonl": "sentence1,sentence2,gold_label\nthe fox,the fox,entailment\n",
    "missing-field": json.dumps({"sentence1": "the red fox runs", "gold_label": "entailment"}) + "\n",
    "unknown-label": json.dumps({"sentence1": "the fox", "sentence2": "the fox", "gold_label": "contradiction"}) + "\n",
    "not-an-object": "[1, 2]\n",
}


BAD_DATA = [  # (case: the test id, named in docs/reliability.md; the end of the one line, after the file's path)
    ("missing", "does not exist: give a .jsonl or .csv file of labelled examples"),
    ("a-folder", "is a folder: give one .jsonl or .csv file of labelled examples"),
    ("empty", "has no examples: give at least one labelled jsonl row"),
    ("not-jsonl", ":1 is not valid JSON (Expecting value); fix that line"),
    ("missing-field", ":1 lacks field(s) sentence2 of task 'scitail'; give every row sentence1, sentence2, gold_label"),
    ("unknown-label", "label 'contradiction' is not one of"),
    ("not-an-object", ":1 is not a JSON object; write one object per line"),
    ("wrong-suffix", "is neither .jsonl (one JSON object per line) nor .csv: rename or convert it"),
    ("binary", "is not UTF-8 text; write jsonl as UTF-8"),
]


@pytest.mark.parametrize(("case", "message"), BAD_DATA, ids=[case for case, _ in BAD_DATA])
def test_a_bad_data_file_is_one_line_exit_2_and_the_run_is_untouched(run_copy, tmp_path, case, message):
    run, _, eval_data = run_copy
    if case == "missing":
        data = tmp_path / "absent.jsonl"
    elif case == "a-folder":
        data = tmp_path / "shots"
        data.mkdir()
    elif case == "wrong-suffix":
        data = write_jsonl(tmp_path / "rows.txt", demo_examples("scitail", "train", 4, 0))
    elif case == "binary":
        data = tmp_path / "rows.jsonl"
        data.write_bytes(b"\xff\xfe\x00garbage\n")
    else:
        data = tmp_path / f"{case}.jsonl"
        data.write_text(BAD_ROW_FILES[case])
    state, siblings = folder_state(run), sorted(run.parent.iterdir())
    result = invoke("adapt", run, "--task", "scitail", "--data", data, "--eval-data", eval_data, "--steps", 2)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert folder_state(run) == state and sorted(run.parent.iterdir()) == siblings


BAD_REQUESTS = {  # test id (named in docs/reliability.md) -> (arguments, the whole message)
    "task-in-run": (["--task", "rte"], "task 'rte' is already in the run tiny: give the new task another name"),
    "init-from-unknown": (["--task", "scitail", "--init-from", "cola"],
                          "--init-from 'cola' is not a task of the run tiny: its tasks are rte, sst2, mrpc "
                          "(or auto: the one with the lowest loss on the shots)"),
    "unknown-tune": (["--task", "scitail", "--tune", "everything"],
                     "invalid value for '--tune': 'everything' is not one of 'embedding', 'layer-norms', 'hypernet'"),
    "built-in-with-template": (["--task", "scitail", "--template", "x: {x}"],
                               "'scitail' is a built-in task with its own template and labels, so --template cannot "
                               "be set: give a custom task its own name"),
    "custom-without-template": (["--task", "topic"],
                                "'topic' is not a built-in task: declare it with --template (e.g. 'sentence: {text}') "
                                "and --labels (e.g. 0,1), and --metric if not accuracy"),
    "built-in-with-paper-splits": (["--task", "cola"],
                                   "built-in task 'cola' cuts its splits by the paper's protocol: adapt it under a "
                                   "custom name with --template and --labels"),
    "too-many-shots": (["--task", "scitail", "--shots", 500],
                       "--shots 500 but --data has 24 examples: ask for fewer shots"),
    "invalid-name": (["--task", "bad/name", "--template", "t: {text}", "--labels", "0,1"], "is not a valid name"),
    "unknown-device": (["--task", "scitail", "--device", "tpu"],
                       "invalid value for '--device': 'tpu' is not one of 'auto', 'cpu', 'cuda'"),
}


@pytest.mark.parametrize(("args", "message"), list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_a_bad_request_is_one_line_exit_2_and_the_run_is_untouched(run_copy, args, message):
    run, data, _ = run_copy
    state = folder_state(run)
    result = invoke("adapt", run, "--data", data, "--steps", 2, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert folder_state(run) == state


def test_few_shot_draws_are_stratified_by_label_and_seeded():
    targets = ["0"] * 30 + ["1"] * 10
    chosen = few_shot_indices(targets, ("0", "1"), 4, seed=5)
    assert sorted(targets[i] for i in chosen) == ["0", "0", "1", "1"]
    assert chosen == few_shot_indices(targets, ("0", "1"), 4, seed=5)
    assert chosen != few_shot_indices(targets, ("0", "1"), 4, seed=6)
    assert len(set(few_shot_indices(targets, ("0", "1"), 25, seed=0))) == 25  # the rarer label runs out first


def test_the_held_out_demo_task_leaves_the_trained_demo_tasks_untouched():
    """The demo recipe's data and word vocabulary are those of the commit before scitail was added
    (sha256 pinned then), and scitail's text uses only that vocabulary."""
    import hashlib

    from hyperexport.data.demo import DEMO_GENERATORS, demo_vocabulary

    digest = hashlib.sha256()
    for task in ("rte", "sst2", "mrpc"):
        for split, size in (("train", 2000), ("validation", 400)):
            digest.update(json.dumps(demo_examples(task, split, size, 42)).encode())
    assert digest.hexdigest() == "97c6110e89dc34312294f6690c64406de75cba387ec92d185a87c2cca32c8e0f"
    vocabulary = demo_vocabulary()
    assert hashlib.sha256(" ".join(vocabulary).encode()).hexdigest() == (
        "afe972db607b290587e3a47c82b0ef7205d33d13269efbae87af1be06390a770")
    assert "scitail" not in DEMO_GENERATORS  # no recipe can train on it
    spec, rows = get_task("scitail"), demo_examples("scitail", "train", 2000, 42)
    assert {w for row in rows for w in spec.format_source(row).split()} <= set(vocabulary)
    assert sorted({spec.format_target(row) for row in rows}) == ["0", "1"]


def test_a_per_task_adapter_is_counted_from_the_backbone_shapes():
    from hyperexport.backbones import backbone_config
    from hyperexport.params import per_task_adapter_parameters
    from hyperexport.recipe.schema import DEFAULT_RECIPE

    recipe = load_recipe(DEFAULT_RECIPE)
    config = backbone_config(recipe.backbone.config)
    d, m = config.d_model, config.d_model // recipe.model.reduction_factor
    positions = 2 * (config.num_layers + config.num_decoder_layers)
    assert per_task_adapter_parameters(recipe) == positions * (2 * m * d + m + d)  # demo: 12 x 4,240 = 50,880


def test_init_from_auto_scores_each_trained_embedding_on_the_shots(trained):
    from hyperexport.data.collate import make_examples
    from hyperexport.training.adapt_loop import nearest_task

    run, _, _ = trained
    base = to_adapt(run)
    tensors = base.trained
    shots = make_examples(get_task("scitail"), demo_examples("scitail", "train", 6, 0))
    best, losses = nearest_task(base, shots)
    assert set(losses) == set(OLD_TASKS) and best == min(losses, key=losses.get)
    assert len(set(losses.values())) == 3  # each row gives its own loss
    swapped = dict(tensors, **{EMBEDDING_KEY: tensors[EMBEDDING_KEY][[1, 0, 2]]})  # rte's and sst2's rows swapped
    _, swapped_losses = nearest_task(dataclasses.replace(base, trained=swapped), shots)
    assert swapped_losses["rte"] == pytest.approx(losses["sst2"])
    assert swapped_losses["sst2"] == pytest.approx(losses["rte"])
