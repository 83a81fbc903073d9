"""Folding a materialized task into the plain backbone: parity with the hypernetwork model."""

from __future__ import annotations

import pytest
import torch

from conftest import model_config, tiny_t5
from hyperexport.errors import UserError
from hyperexport.fold import AdaptedAttention, AdaptedFeedForward, fold_task
from hyperexport.materialize import task_tensors
from hyperexport.model.hyper_t5 import HyperT5

TASKS = ("rte", "sst2", "mrpc")


def trained_like(variant: str, feed_forward_proj: str) -> HyperT5:
    """A HyperT5 whose adapters and layer norms moved away from their init, as training moves them."""
    model = HyperT5(tiny_t5(feed_forward_proj, seed=0), TASKS, model_config(variant))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    return model.eval()


@pytest.mark.parametrize("variant", ["hyperformer++", "hyperformer", "adapters"])
@pytest.mark.parametrize("feed_forward_proj", ["relu", "gated-gelu"])
def test_folded_model_matches_the_hypernetwork_model(variant, feed_forward_proj, token_batch):
    model = trained_like(variant, feed_forward_proj)
    for task in TASKS:
        folded = fold_task(tiny_t5(feed_forward_proj, seed=0), task_tensors(model, task), "gelu_new")
        task_ids = torch.full((4,), model.task_id(task))
        with torch.no_grad():
            expected = model(task_ids=task_ids, **token_batch).logits
            actual = folded(**token_batch).logits
        assert (actual - expected).abs().max().item() <= 1e-5  # the fp32 bound
        generate = dict(input_ids=token_batch["input_ids"], attention_mask=token_batch["attention_mask"],
                        max_new_tokens=6, do_sample=False)
        assert torch.equal(folded.generate(**generate), model.generate(task_ids=task_ids, **generate))


def test_folded_model_holds_no_hypernetwork_and_no_trainable_adapter():
    folded = fold_task(tiny_t5(seed=0), task_tensors(trained_like("hyperformer++", "relu"), "rte"), "gelu_new")
    names = [name for name, _ in folded.named_parameters()]
    assert not any("generator" in n or "task_embedding" in n or "layer_id" in n for n in names)
    blocks = list(folded.encoder.block) + list(folded.decoder.block)
    assert all(isinstance(b.layer[0].SelfAttention, AdaptedAttention) for b in blocks)
    assert all(isinstance(b.layer[-1].DenseReluDense, AdaptedFeedForward) for b in blocks)
    assert not any(isinstance(m, AdaptedAttention) for b in folded.decoder.block for m in b.layer[1].modules())
    assert not folded.training


def test_non_finite_weights_are_refused():
    model = trained_like("hyperformer++", "relu")
    with torch.no_grad():
        model.generators["decoder"].up_bias.bias[3] = float("nan")
    with pytest.raises(UserError, match="non-finite weights .*refusing to materialize"):
        task_tensors(model, "sst2")


def test_layer_norms_from_another_backbone_are_refused():
    tensors = task_tensors(trained_like("hyperformer++", "relu"), "rte")
    with pytest.raises(UserError, match="materialized from another"):
        fold_task(tiny_t5(seed=0, d_model=48, d_kv=12), tensors, "gelu_new")


@pytest.mark.slow
def test_materialize_cli_then_fold_reproduces_the_run(tmp_path, monkeypatch):
    """End to end on the tiny recipe: train, `hyperexport materialize`, load the folded task."""
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from hyperexport.contracts import manifest as sealing
    from hyperexport.data.collate import collate
    from hyperexport.fold import load_folded_task
    from hyperexport.model.trained import load_run
    from hyperexport.training.task_data import load_task_data
    from hyperexport_cli.main import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    tiny = Path(__file__).parents[1] / "recipes" / "tiny.yaml"
    assert runner.invoke(app, ["train", str(tiny)]).exit_code == 0
    result = runner.invoke(app, ["materialize", "--task", "rte"])
    assert result.exit_code == 0, result.output
    task_dir = tmp_path / "runs" / "tiny" / "tasks" / "rte"
    assert sorted(p.name for p in task_dir.iterdir()) == ["adapters.safetensors", "manifest.json", "task.json"]
    manifest = json.loads((task_dir / "manifest.json").read_text())
    assert manifest["source_checkpoint_sha256"] == sealing.sha256_file(tmp_path / "runs/tiny/model.safetensors")
    assert manifest["parameters"]["task_adapters"] < manifest["parameters"]["backbone"]
    assert manifest["files"]["adapters.safetensors"] == sealing.sha256_file(task_dir / "adapters.safetensors")
    assert json.loads((task_dir / "task.json").read_text())["labels"] == ["0", "1"]

    again = runner.invoke(app, ["materialize", "--task", "rte"])
    assert again.exit_code == 2 and "already exists: pass --overwrite" in again.stderr
    unknown = runner.invoke(app, ["materialize", "--task", "cola"])
    assert unknown.exit_code == 2 and "task 'cola' is not in the run tiny" in unknown.stderr

    loaded = load_run()
    folded, facts = load_folded_task(task_dir)
    examples = load_task_data(loaded.recipe, splits=("train", "validation"))["rte"].validation
    batch = collate(loaded.tokenizer, examples, {"rte": 0}, facts.max_source_length, 4)
    inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  decoder_input_ids=folded._shift_right(batch["labels"]))
    with torch.no_grad():
        expected = loaded.model(task_ids=batch["task_ids"], **inputs).logits
        actual = folded(**inputs).logits
    assert (actual - expected).abs().max().item() <= 1e-5
