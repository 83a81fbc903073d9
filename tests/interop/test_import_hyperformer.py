"""import-hyperformer against checkpoints written by the original HyperFormer code (tests/fixtures/hyperformer,
made with transformers 3.5.1: see its README). Tolerance: 2e-5 absolute on fp32 logits and adapter
tensors (observed: a few 1e-6); greedy generations identical."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from hyperexport.interop.hyperformer import import_hyperformer
from hyperexport.model.adapter import STACKS
from hyperexport.model.trained import load_run
from hyperexport_cli.main import app

FIXTURES = Path(__file__).parents[1] / "fixtures" / "hyperformer"
VARIANTS = {"hyperformer++": "hyperformer++", "hyperformer": "hyperformer-layer",
            "meta-adapter": "hyperformer", "adapters": "adapters"}  # fixture folder -> our variant
TOLERANCE = 2e-5
ADAPTER_TENSORS = ("down_weight", "down_bias", "up_weight", "up_bias", "ln_weight", "ln_bias")


def reference(fixture: str) -> tuple[dict[str, torch.Tensor], dict]:
    folder = FIXTURES / fixture
    return load_file(str(folder / "reference.safetensors")), json.loads((folder / "reference.json").read_text())


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def original_logits(model, task_id: int, ref: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.full((2,), task_id), input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
                     decoder_input_ids=ref["decoder_input_ids"]).logits


@pytest.mark.parametrize("fixture, variant", VARIANTS.items())
def test_the_imported_model_reproduces_the_original(tmp_path, fixture, variant):
    ref, facts = reference(fixture)
    loaded = load_run(import_hyperformer(FIXTURES / fixture / "checkpoint", output=tmp_path / "run"))
    model = loaded.model
    assert loaded.recipe.model.variant == variant and loaded.tokenizer is None
    assert list(model.task_names) == facts["tasks"]
    for task in facts["tasks"]:
        task_id = model.task_id(task)
        assert (original_logits(model, task_id, ref) - ref[f"{task}.logits"]).abs().max() <= TOLERANCE
        with torch.no_grad():
            weights = model.adapter_weights(torch.tensor([task_id]))
        for stack in STACKS:
            for name in ADAPTER_TENSORS:
                generated = getattr(weights[stack], name)[0]  # [L, 2, ...]
                assert (generated - ref[f"{task}.adapters.{stack}.{name}"]).abs().max() <= TOLERANCE, (stack, name)
        tokens = model.generate(torch.full((2,), task_id), input_ids=ref["input_ids"],
                                attention_mask=ref["attention_mask"], max_length=8, num_beams=1, do_sample=False)
        assert tokens.tolist() == facts["greedy_generations"][task]


def test_without_the_legacy_cross_attention_bias_the_logits_differ(tmp_path):
    ref, _ = reference("hyperformer++")
    model = load_run(import_hyperformer(FIXTURES / "hyperformer++" / "checkpoint", output=tmp_path / "run")).model
    assert model.backbone.decoder.block[0].layer[1].EncDecAttention.has_relative_attention_bias
    model.backbone.decoder.block[0].layer[1].EncDecAttention.has_relative_attention_bias = False  # current T5
    assert (original_logits(model, 0, ref) - ref["rte.logits"]).abs().max() > 100 * TOLERANCE


@pytest.mark.parametrize("fixture", [pytest.param(f, marks=[pytest.mark.slow] if f != "hyperformer++" else [])
                                     for f in VARIANTS])
def test_cli_import_materialize_export_verify_and_the_onnx_decoder_reproduces_the_original(
        tmp_path, monkeypatch, fixture):
    import onnxruntime as ort

    monkeypatch.chdir(tmp_path)
    ref, _ = reference(fixture)
    assert invoke("import-hyperformer", FIXTURES / fixture / "checkpoint", "--output", "runs/imported").exit_code == 0
    assert invoke("materialize", "--run", "runs/imported", "--task", "rte").exit_code == 0
    exported = invoke("export", "--run", "runs/imported", "--task", "rte", "--format", "onnx", "--head", "generate",
                      "--output", "exports/rte")
    assert exported.exit_code == 0, exported.output
    verified = invoke("verify", "exports/rte", "--json")
    assert verified.exit_code == 0, verified.output
    assert json.loads((tmp_path / "exports/rte/parity_report.json").read_text())["passed"]

    feeds = {"input_ids": ref["input_ids"].numpy(), "attention_mask": ref["attention_mask"].numpy()}
    encoder = ort.InferenceSession("exports/rte/encoder_model.onnx", providers=["CPUExecutionProvider"])
    hidden = encoder.run(None, feeds)[0]
    assert np.abs(hidden - ref["rte.encoder_hidden_states"].numpy()).max() <= TOLERANCE
    from hyperexport.runtime.backends import OnnxRuntimeBackend
    from hyperexport.runtime.generation import teacher_forced_logits

    with OnnxRuntimeBackend("exports/rte") as backend:  # one decoder graph, the encoder's cross-attention past
        logits = teacher_forced_logits(backend, feeds["input_ids"], feeds["attention_mask"],
                                       ref["decoder_input_ids"].numpy())
    assert np.abs(logits - ref["rte.logits"].numpy()).max() <= TOLERANCE


def test_a_checkpoint_with_unknown_and_missing_keys_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint = shutil.copytree(FIXTURES / "hyperformer++" / "checkpoint", tmp_path / "checkpoint")
    state = torch.load(checkpoint / "pytorch_model.bin", weights_only=True)
    state["encoder.adapter_layers_hyper_net.token_type_embeddings.weight"] = state.pop(
        "encoder.adapter_layers_hyper_net.adapters_block_type.weight")
    torch.save(state, checkpoint / "pytorch_model.bin")
    result = invoke("import-hyperformer", checkpoint, "--output", "runs/bad")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "1 unknown keys: encoder.adapter_layers_hyper_net.token_type_embeddings.weight" in lines[0]
    assert "1 missing keys: encoder.adapter_layers_hyper_net.adapters_block_type.weight" in lines[0]
    assert lines[0].endswith(  # the whole line after the file's path (as in docs/reliability.md)
        "pytorch_model.bin is not a checkpoint of the original HyperFormer layout its arguments describe: "
        "1 unknown keys: encoder.adapter_layers_hyper_net.token_type_embeddings.weight; "
        "1 missing keys: encoder.adapter_layers_hyper_net.adapters_block_type.weight; "
        "check the training-arguments JSON (variant, tasks) matches it")
    assert not (tmp_path / "runs").exists()  # nothing written


def test_arguments_of_another_variant_are_refused_by_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint = shutil.copytree(FIXTURES / "hyperformer++" / "checkpoint", tmp_path / "checkpoint")
    args = json.loads((checkpoint / "args.json").read_text())
    (checkpoint / "args.json").write_text(json.dumps({**args, "efficient_unique_hyper_net": False,
                                                      "unique_hyper_net": True}))
    result = invoke("import-hyperformer", checkpoint)
    assert result.exit_code == 2 and "unknown keys" in result.stderr and "missing keys" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_tokenizer_is_optional_and_only_the_stages_that_need_one_ask_for_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint = FIXTURES / "adapters" / "checkpoint"
    assert invoke("import-hyperformer", checkpoint, "--output", "runs/plain").exit_code == 0
    assert invoke("materialize", "--run", "runs/plain", "--task", "sst2").exit_code == 0
    refused = invoke("export", "--run", "runs/plain", "--task", "sst2", "--head", "classify", "--output", "x")
    assert refused.exit_code == 2 and "needs the run's tokenizer" in refused.stderr and not Path("x").exists()
    assert invoke("export", "--run", "runs/plain", "--task", "sst2", "--head", "generate", "--output",
                  "g").exit_code == 0
    unreadable = invoke("predict", "g", '{"sentence": "a film"}')
    assert unreadable.exit_code == 2 and "has no tokenizer" in unreadable.stderr
    assert invoke("import-hyperformer", checkpoint, "--output", "runs/text", "--tokenizer", "byt5").exit_code == 0
    assert load_run("runs/text").tokenizer is not None
    assert (Path("runs/latest").resolve() == Path("runs/text").resolve())
    again = invoke("import-hyperformer", checkpoint, "--output", "runs/text")
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_import_hyperformer_has_help_with_an_example():
    result = invoke("import-hyperformer", "--help")
    assert result.exit_code == 0 and "Example: hyperexport import-hyperformer" in result.output
