"""`predict`: labels of an export equal the hypernetwork model's (classify argmax, greedy generation),
truncation warnings, the CLI's output, one-line errors for every bad input, and a fuzzed input reader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import reseal
from hyperexport.contracts import manifest as sealing
from hyperexport.contracts import names
from hyperexport.contracts.names import CLASSIFY_GRAPH
from hyperexport.data.collate import collate
from hyperexport.data.splits import task_split
from hyperexport.errors import UserError
from hyperexport.export.classify import label_token_ids
from hyperexport.export.onnx import export_onnx
from hyperexport.materialize import materialize
from hyperexport.model.trained import load_run
from hyperexport.runtime.examples import read_examples
from hyperexport.runtime.heads import label_results
from hyperexport.runtime.predict import predict
from hyperexport.tasks.registry import get_task
from hyperexport.training.task_data import load_task_data
from hyperexport_cli.main import app

TINY = Path(__file__).parents[2] / "recipes" / "tiny.yaml"
RTE_TEMPLATE, SST2_TEMPLATE = get_task("rte").template, get_task("sst2").template
runner = CliRunner()


def perturb_backbone(run: Path, seed: int = 3, scale: float = 0.5) -> None:
    """Seeded noise on the run's frozen random backbone. The untrained tiny model gives every demo
    example the same label and an empty generation; with this noise (seed 3) its labels and greedy
    strings differ between examples, so the argmax and generation checks compare more than a constant."""
    path = run / names.BACKBONE_DIR / "model.safetensors"
    generator = torch.Generator().manual_seed(seed)
    save_file({name: t + scale * t.std() * torch.randn(t.shape, generator=generator) if t.numel() > 1 else t
               for name, t in load_file(path).items()}, path)
    reseal(run)


@pytest.fixture(scope="module")
def exports(tiny_rte, tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    run = tiny_rte.copy_run_to(root / "runs" / "tiny", tasks=False)  # as training left it
    perturb_backbone(run)  # before materialize: every later stage reads the same weights
    materialize(run, tasks=["rte", "sst2"])
    return run, {
        "rte": export_onnx(run, task="rte", head="both", output=root / "exports" / "rte"),
        "rte-generate": export_onnx(run, task="rte", head="generate", output=root / "exports" / "rte-generate"),
        "sst2": export_onnx(run, task="sst2", head="classify", output=root / "exports" / "sst2"),
    }


@pytest.fixture(scope="module")
def demo(exports):
    """The rte demo validation examples: raw fields, and the batch training's collate makes of them."""
    run, _ = exports
    loaded = load_run(run)
    recipe = loaded.recipe
    raw = task_split(get_task("rte"), "demo", "validation", None, data_seed=recipe.data.data_seed,
                     max_examples=recipe.tasks[0].max_eval_examples)
    examples = load_task_data(recipe, splits=("train", "validation"))["rte"].validation
    assert [get_task("rte").format_source(row) for row in raw] == [example.source for example in examples]
    return loaded, raw, collate(loaded.tokenizer, examples, {"rte": 0}, recipe.data.max_source_length, 4)


def hypernetwork_label_scores(loaded, batch, labels: list[str]) -> torch.Tensor:
    """[B, K] teacher-forced log-probability of each label string under the hypernetwork model."""
    columns = []
    for ids in label_token_ids(loaded.tokenizer, labels):
        targets = ids[ids >= 0].repeat(len(batch["input_ids"]), 1)
        with torch.no_grad():
            logits = loaded.model(task_ids=batch["task_ids"], input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"],
                                  decoder_input_ids=loaded.model.backbone._shift_right(targets)).logits
        columns.append(torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(-1))
    return torch.stack(columns, dim=1)


def test_classify_labels_are_the_argmax_of_onnx_and_of_the_hypernetwork_model(exports, demo, capsys):
    _, folders = exports
    loaded, raw, batch = demo
    results = predict(folders["rte"], raw)  # extra keys (label) are ignored
    labels = json.loads((folders["rte"] / "task.json").read_text())["labels"]
    session = ort.InferenceSession(str(folders["rte"] / CLASSIFY_GRAPH), providers=["CPUExecutionProvider"])
    onnx_scores = session.run(["scores"], {"input_ids": batch["input_ids"].numpy(),
                                           "attention_mask": batch["attention_mask"].numpy()})[0]
    torch_scores = hypernetwork_label_scores(loaded, batch, labels).numpy()
    assert [r["index"] for r in results] == list(range(len(raw)))
    assert [r["label"] for r in results] == [labels[i] for i in onnx_scores.argmax(1)]
    assert [r["label"] for r in results] == [labels[i] for i in torch_scores.argmax(1)]
    assert set(r["label"] for r in results) == set(labels)  # both labels occur: the check is not vacuous
    got = np.array([[r["scores"][label] for label in labels] for r in results])
    assert np.abs(got - onnx_scores).max() <= 1e-5 and np.abs(got - torch_scores).max() <= 1e-4
    probabilities = np.array([[r["probabilities"][label] for label in labels] for r in results])
    assert np.allclose(probabilities.sum(1), 1.0) and (probabilities.argmax(1) == got.argmax(1)).all()
    warnings = capsys.readouterr().err.strip().splitlines()  # every demo source is longer than 64 bytes
    assert len(warnings) == len(raw)
    assert warnings[0] == "warning: example 0 has 85 tokens; truncated to max_source_length 64"


def test_generate_export_predicts_the_hypernetwork_models_greedy_strings(exports, demo):
    _, folders = exports
    loaded, raw, batch = demo
    max_new_tokens = json.loads((folders["rte-generate"] / "task.json").read_text())["max_new_tokens"]
    with torch.no_grad():
        out = loaded.model.generate(task_ids=batch["task_ids"], input_ids=batch["input_ids"],
                                    attention_mask=batch["attention_mask"], max_new_tokens=max_new_tokens,
                                    do_sample=False, num_beams=1)
    expected = [text.strip() for text in loaded.tokenizer.batch_decode(out, skip_special_tokens=True)]
    results = predict(folders["rte-generate"], raw, batch_size=5)  # batches of 5, 5, 5, 1
    assert results == [{"index": i, "label": text, "label_name": text} for i, text in enumerate(expected)]
    assert len(set(expected)) > 1 and any(expected)  # differing, non-empty strings: the check is not vacuous
    sealing.unseal(folders["rte-generate"], "export")  # the folder was only read


def test_cli_prints_json_and_a_table_and_warns_on_stderr(exports, tmp_path):
    _, folders = exports
    result = runner.invoke(app, ["predict", str(folders["sst2"]), "a fine film", "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["index"] == 0 and row["label"] in row["scores"] and set(row["probabilities"]) == {"0", "1"}
    assert result.stderr == ""
    lines = tmp_path / "in.jsonl"
    lines.write_text('{"sentence1": "a", "sentence2": "b"}\n\n' + json.dumps({"sentence1": "x" * 70, "sentence2": 3}))
    table = runner.invoke(app, ["predict", str(folders["rte"]), "--input", str(lines)])
    assert table.exit_code == 0, table.output
    assert "probability" in table.stdout and sum(line.startswith("│ 1") for line in table.stdout.splitlines()) == 1
    assert table.stderr.strip() == "warning: example 1 has 95 tokens; truncated to max_source_length 64"


BAD_INPUTS = [  # (arguments with {rte}, {materialized}, {tampered}, {file}; the file's text; message)
    (["{tmp}/nowhere", "x"], None, "no export at {tmp}/nowhere: run `hyperexport export --task <task>` first"),
    (["{materialized}", "x"], None, "rte is not an export folder (its manifest says 'materialize')"),
    (["{tampered}", "x"], None, "task.json was changed (sha256 mismatch) since it was written: export it again"),
    (["{rte}"], None, "pass the examples as TEXT or as --input FILE.jsonl (exactly one of them)"),
    (["{rte}", "x", "--input", "{file}"], "{}", "pass the examples as TEXT or as --input FILE.jsonl"),
    (["{rte}", "a plain sentence"], None, "task rte needs fields sentence1, sentence2: pass a JSON object"),
    (["{rte}", '{"sentence1": "a"}'], None, "TEXT lacks field sentence2: task rte needs fields sentence1, sentence2"),
    (["{rte}", '{"sentence1": "a",'], None, "TEXT is not JSON (Expecting property name"),
    (["{rte}", '{"sentence1": null, "sentence2": "b"}'], None, "TEXT: field sentence1 is null; give it as a string"),
    (["{rte}", "  "], None, "TEXT is empty: pass the example's text, or a JSON object of its fields"),
    (["{rte}", "--input", "{file}"], "\n \n", "{file} is empty: write one JSON object per line"),
    (["{rte}", "--input", "{file}"], '{"sentence1": "a", "sentence2": "b"}\nnot json\n', "{file}:2 is not JSON"),
    (["{rte}", "--input", "{file}"], '["a", "b"]', "{file}:1 is a list, not a JSON object: give the fields"),
    (["{rte}", "--input", "{file}"], '{"sentence2": "b"}', "{file}:1 lacks field sentence1: task rte needs"),
    (["{rte}", "--input", "{tmp}/none.jsonl"], None, "no input file at {tmp}/none.jsonl: check the path"),
]


def fill(text: str, names: dict) -> str:
    for name, value in names.items():
        text = text.replace("{" + name + "}", str(value))
    return text


@pytest.mark.parametrize(("args", "content", "message"), BAD_INPUTS, ids=[m.split(":")[0][:40] for *_, m in BAD_INPUTS])
def test_bad_input_is_one_line_on_stderr_and_exit_2(exports, tmp_path, args, content, message):
    run, folders = exports
    tampered = tmp_path / "tampered"
    shutil.copytree(folders["sst2"], tampered)
    (tampered / "task.json").write_text((tampered / "task.json").read_text().replace("sentence", "text"))
    file = tmp_path / "in.jsonl"
    if content is not None:
        file.write_text(content)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    names = {"rte": folders["rte"], "materialized": run / "tasks" / "rte", "tampered": tampered, "file": file,
             "tmp": tmp_path}
    result = runner.invoke(app, ["predict", *(fill(arg, names) for arg in args)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fill(message, names) in lines[0]
    assert result.stdout == "" and sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    sealing.unseal(folders["rte"], "export")


def test_regression_takes_the_grid_value_with_the_highest_score_not_the_expectation():
    grid = list(get_task("stsb").labels)  # "0.0", "0.2", ..., "5.0"
    scores = np.full((2, len(grid)), -30.0)
    scores[0, [0, 25]] = np.log([0.45, 0.55])  # expectation 2.75, argmax 5.0
    scores[1, 16] = 0.0
    results = label_results(scores, grid)
    assert [r["label"] for r in results] == ["5.0", "3.2"]
    assert results[0]["probabilities"]["5.0"] == pytest.approx(0.55, abs=1e-9)
    assert sum(results[1]["probabilities"].values()) == pytest.approx(1.0)


def test_reader_fields_from_plain_text_json_objects_and_jsonl(tmp_path):
    assert read_examples("sst2", SST2_TEMPLATE, text="a fine film") == [{"sentence": "a fine film"}]
    assert read_examples("sst2", SST2_TEMPLATE, text='"quoted"') == [{"sentence": '"quoted"'}]
    assert read_examples("sst2", SST2_TEMPLATE, text=' {"sentence": 2.5, "idx": 7}') == [{"sentence": "2.5"}]
    file = tmp_path / "in.jsonl"
    file.write_text('{"sentence1": "a\u2028b", "sentence2": "c"}\r\n\n{"sentence2": "e", "sentence1": "d"}\n')
    assert read_examples("rte", RTE_TEMPLATE, input_file=file) == [
        {"sentence1": "a\u2028b", "sentence2": "c"}, {"sentence1": "d", "sentence2": "e"}]
    with pytest.raises(UserError, match="field sentence is not valid Unicode"):
        read_examples("sst2", SST2_TEMPLATE, text='{"sentence": "\\ud800"}')
    file.write_bytes(b'{"sentence": "\xff"}')
    with pytest.raises(UserError, match="is not UTF-8 text"):
        read_examples("sst2", SST2_TEMPLATE, input_file=file)


def _examples_or_one_line_error(template: str, **source) -> None:
    fields = set(get_task("rte" if template == RTE_TEMPLATE else "sst2").source_fields)
    try:
        examples = read_examples("task", template, **source)
    except UserError as error:
        assert len(str(error).splitlines()) == 1 and str(error).strip()
        return
    assert examples and all(set(example) == fields and all(isinstance(v, str) for v in example.values())
                            for example in examples)


JSONISH = st.one_of(st.text(), st.dictionaries(st.sampled_from(["sentence", "sentence1", "sentence2", "x"]),
                                               st.one_of(st.text(), st.integers(), st.none())).map(json.dumps))


@settings(max_examples=200, deadline=None)
@given(text=JSONISH, template=st.sampled_from([RTE_TEMPLATE, SST2_TEMPLATE]))
def test_any_text_yields_examples_or_a_one_line_user_error(text, template):
    _examples_or_one_line_error(template, text=text)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(JSONISH, max_size=5), template=st.sampled_from([RTE_TEMPLATE, SST2_TEMPLATE]))
def test_any_jsonl_file_yields_examples_or_a_one_line_user_error(tmp_path_factory, lines, template):
    file = tmp_path_factory.getbasetemp() / "fuzz.jsonl"
    file.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")  # lone surrogates: bad UTF-8
    _examples_or_one_line_error(template, input_file=file)
