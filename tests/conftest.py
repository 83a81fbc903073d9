"""Shared fixtures: tiny seeded T5 backbones built from configs (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from hyperexport.recipe.schema import ModelConfig

# Tests run two pytest workers on two cores: one thread each, inherited by CLI subprocesses too.
# (Two OpenMP threads per worker spin against each other and make tiny matmuls 100x slower.)
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def tiny_t5_config(feed_forward_proj: str = "relu", **overrides) -> T5Config:
    values = dict(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_decoder_layers=2, num_heads=4,
                  dropout_rate=0.0, feed_forward_proj=feed_forward_proj, decoder_start_token_id=0,
                  pad_token_id=0, eos_token_id=1)
    return T5Config(**{**values, **overrides})


def tiny_t5(feed_forward_proj: str = "relu", seed: int = 0, **overrides) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(tiny_t5_config(feed_forward_proj, **overrides)).eval()


def model_config(variant: str = "hyperformer++", **overrides) -> ModelConfig:
    """The recipe's real `ModelConfig`, small enough for tests."""
    values = dict(variant=variant, reduction_factor=4, task_embedding_dim=16, hypernet_hidden_dim=24,
                  task_projector_input_dim=None, activation="gelu_new")
    return ModelConfig(**{**values, **overrides})


@pytest.fixture
def token_batch():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 300, (4, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    decoder_input_ids = torch.randint(3, 300, (4, 5), generator=generator)
    return dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)


TINY_RECIPE = Path(__file__).parents[1] / "recipes" / "tiny.yaml"


def tiny_rte_export(root: Path, store_once: bool = True) -> tuple[Path, Path]:
    """Train the tiny recipe under `root`, materialize rte and export both heads: (run, export folder).
    `store_once=False`: optimum's three generate graphs, the layout TensorRT engines are built from."""
    from hyperexport.export.onnx import export_onnx
    from hyperexport.materialize import materialize
    from hyperexport.recipe.load import load_recipe
    from hyperexport.training.loop import train

    run = train(load_recipe(TINY_RECIPE), output=root / "runs" / "tiny", progress_bar=False)
    materialize(run, tasks=["rte"])
    return run, export_onnx(run, task="rte", head="both", output=root / "exports" / "rte" / "onnx",
                            store_once=store_once)


def reseal(folder: Path) -> None:
    """Re-hash `folder` into its manifest after a test changed a file on purpose (a run that differs
    from the one an export came from, not tampering)."""
    import json

    from hyperexport.contracts import manifest as sealing
    from hyperexport.contracts import names, publish

    manifest = json.loads((folder / names.MANIFEST_FILE).read_text())
    manifest["files"] = sealing.sealed_files(folder, manifest["stage"])
    publish.write_json(folder / names.MANIFEST_FILE, manifest)


def verified_tiny_export(root: Path) -> Path:
    """`tiny_rte_export` with a passed parity report (what `serve` and `deploy` accept)."""
    from hyperexport.verify.parity import verify

    _, export = tiny_rte_export(root)
    assert verify(export, max_examples=8)["passed"]
    return export


# rte examples short enough for the tiny recipe's max_source_length (64 byte tokens, template included)
SHORT_RTE_EXAMPLES = [{"sentence1": f"a {word} fox", "sentence2": f"a {other}"}
                      for word, other in (("red", "cat"), ("big", "fox"), ("old", "dog"), ("shy", "fox"), ("sly", "hen"))]


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    import hashlib

    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}
