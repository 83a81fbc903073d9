"""ONNX export of a materialized task: files, manifest, no hypernetwork in the graphs, and parity of
ONNX Runtime with the PyTorch models (hypernetwork and folded) for both heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import TINY_RECIPE
from hyperexport.contracts import manifest as sealing
from hyperexport.contracts.names import CLASSIFY_GRAPH, GRAPH_WEIGHTS_FILE
from hyperexport.data.collate import collate
from hyperexport.errors import UserError
from hyperexport.export.classify import LabelScorer, label_token_ids
from hyperexport.export.onnx import export_onnx
from hyperexport.fold import load_folded_task
from hyperexport.model.trained import load_run
from hyperexport.recipe.load import load_recipe
from hyperexport.runtime.backends import OnnxRuntimeBackend
from hyperexport.runtime.generation import teacher_forced_logits
from hyperexport.training.task_data import load_task_data

ATOL_FP32 = 1e-4  # the fp32 bound for logits and scores


@pytest.fixture(scope="module")
def exported(tiny_rte):
    return tiny_rte.run, tiny_rte.export  # only read


@pytest.fixture(scope="module")
def demo_batch(exported):
    run, _ = exported
    loaded = load_run(run)
    examples = load_task_data(loaded.recipe, splits=("train", "validation"))["rte"].validation
    return loaded, collate(loaded.tokenizer, examples, {"rte": 0}, 64, 4)


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_export_folder_holds_the_graphs_tokenizer_and_a_manifest_of_hashes(exported):
    _, folder = exported
    names = {p.name for p in folder.iterdir()}
    assert {"encoder_model.onnx", "decoder_with_past_model.onnx", CLASSIFY_GRAPH, GRAPH_WEIGHTS_FILE,
            "config.json", "task.json", "io_spec.json", "manifest.json", "tokenizer"} <= names
    assert "decoder_model_merged.onnx" not in names  # separate decoders: no If node for TensorRT
    assert "decoder_model.onnx" not in names  # one decoder graph for every step
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"] == sealing.file_hashes(folder)
    spec = json.loads((folder / "io_spec.json").read_text())
    assert spec[CLASSIFY_GRAPH]["outputs"] == [{"name": "scores", "dtype": "float", "shape": ["batch_size", 2]}]


def test_graphs_contain_no_hypernetwork(exported):
    _, folder = exported
    recipe = load_recipe(TINY_RECIPE)
    task_dim = recipe.model.task_embedding_dim  # 16: no backbone tensor of t5-test has this size
    for path in folder.glob("*.onnx"):
        graph = onnx.load(str(path)).graph
        assert not [i.name for i in graph.initializer if task_dim in i.dims], path.name
        assert not any(node.op_type == "If" for node in graph.node)
    encoder = onnx.load(str(folder / "encoder_model.onnx")).graph
    # T5's own norms are RMS norms (Pow/ReduceMean); each adapter adds exactly one LayerNormalization
    adapters = 2 * 2  # 2 encoder layers x (self-attention, feed-forward)
    assert sum(node.op_type == "LayerNormalization" for node in encoder.node) == adapters


def test_onnx_runtime_logits_match_the_hypernetwork_model(exported, demo_batch):
    _, folder = exported
    loaded, batch = demo_batch
    decoder_ids = loaded.model.backbone._shift_right(batch["labels"])
    with torch.no_grad():
        expected = loaded.model(task_ids=batch["task_ids"], input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"], decoder_input_ids=decoder_ids).logits.numpy()
    with OnnxRuntimeBackend(folder) as backend:  # the encoder's cross-attention past, one decoder call
        logits = teacher_forced_logits(backend, batch["input_ids"].numpy(), batch["attention_mask"].numpy(),
                                       decoder_ids.numpy())
    assert np.abs(logits - expected).max() <= ATOL_FP32


def test_classify_scores_match_torch_and_rank_like_the_model(exported, demo_batch):
    run, folder = exported
    loaded, batch = demo_batch
    folded, facts = load_folded_task(run / "tasks" / "rte")
    scorer = LabelScorer(folded, label_token_ids(loaded.tokenizer, facts.labels)).eval()
    with torch.no_grad():
        expected = scorer(batch["input_ids"], batch["attention_mask"]).numpy()
    scores = session(folder / CLASSIFY_GRAPH).run(
        ["scores"], {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()})[0]
    assert scores.shape == (len(batch["input_ids"]), 2)
    assert np.abs(scores - expected).max() <= ATOL_FP32
    # the scores are log-probabilities of whole label strings: at most 0, at least one label likely
    assert (scores <= 1e-6).all()


def test_optimum_runs_the_three_graph_export_with_the_models_tokens(exported, demo_batch, tmp_path):
    """`store_once=False` keeps optimum's three graphs (what TensorRT engines are built from)."""
    from optimum.onnxruntime import ORTModelForSeq2SeqLM

    run, _ = exported
    loaded, batch = demo_batch
    folder = export_onnx(run, task="rte", head="generate", output=tmp_path / "three", store_once=False)
    assert {"decoder_model.onnx", "decoder_with_past_model.onnx"} <= {p.name for p in folder.iterdir()}
    ort_model = ORTModelForSeq2SeqLM.from_pretrained(folder, use_cache=True, use_merged=False)
    kwargs = dict(input_ids=batch["input_ids"][:8], attention_mask=batch["attention_mask"][:8], max_new_tokens=4,
                  do_sample=False, num_beams=1)
    assert torch.equal(ort_model.generate(**kwargs), loaded.model.generate(task_ids=batch["task_ids"][:8], **kwargs))


def test_export_refuses_an_unmaterialized_task_and_an_existing_folder(exported, tmp_path):
    run, folder = exported
    with pytest.raises(UserError, match="run `hyperexport materialize"):
        export_onnx(run, task="sst2", output=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(UserError, match="already exists: pass --overwrite"):
        export_onnx(run, task="rte", output=folder)


def test_export_cli_writes_the_default_folder(exported, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from hyperexport_cli.main import app

    run, _ = exported
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--run", str(run), "--task", "rte", "--head", "classify"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "exports" / "rte" / "onnx"
    assert (folder / CLASSIFY_GRAPH).is_file() and not (folder / "encoder_model.onnx").exists()
    bad = runner.invoke(app, ["export", "--run", str(run), "--task", "rte", "--head", "beam", "--output", "x"])
    assert bad.exit_code == 2 and not (tmp_path / "x").exists()
    assert "invalid value for '--head': 'beam' is not one of 'generate', 'classify', 'both'" in bad.stderr


def test_an_edited_export_is_detected_by_its_manifest(exported, tmp_path):
    import shutil

    _, folder = exported
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert sealing.unseal(copy, "export")["format"] == "onnx"
    with open(copy / CLASSIFY_GRAPH, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(UserError, match="classify_model.onnx was changed \\(sha256 mismatch\\)"):
        sealing.unseal(copy, "export")
    shutil.copy(folder / CLASSIFY_GRAPH, copy / CLASSIFY_GRAPH)
    (copy / "encoder_model.onnx").unlink()
    with pytest.raises(UserError, match="is missing"):
        sealing.unseal(copy, "export")


def test_export_cli_int8_goes_to_its_own_default_folder(exported, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from hyperexport_cli.main import app

    run, _ = exported
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["export", "--run", str(run), "--task", "rte", "--head", "classify",
                                      "--precision", "int8"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "exports" / "rte" / "onnx-int8" / "manifest.json").read_text())
    assert (manifest["precision"], manifest["opset"]) == ("int8", 18)
    bad = CliRunner().invoke(app, ["export", "--run", str(run), "--task", "rte", "--precision", "fp8"])
    assert bad.exit_code == 2
    assert "invalid value for '--precision': 'fp8' is not one of 'fp32', 'fp16', 'bf16', 'int8'" in bad.stderr
    assert not (tmp_path / "exports" / "rte" / "onnx-fp8").exists()
