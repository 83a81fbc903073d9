"""Shared fixtures: tiny seeded T5 backbones built from configs (no downloads), and the tiny recipe trained
and exported once per session (`tiny_rte`) for the modules that need a trained run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from hyperexport.contracts import names
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
    `store_once=False`: optimum's three generate graphs, the layout TensorRT engines are built from.
    Tests take the session's tree (`tiny_rte` fixture) instead; this builds it."""
    from hyperexport.export.onnx import export_onnx
    from hyperexport.materialize import materialize
    from hyperexport.recipe.load import load_recipe
    from hyperexport.training.loop import train

    run = train(load_recipe(TINY_RECIPE), output=root / "runs" / "tiny", progress_bar=False)
    materialize(run, tasks=["rte"])
    return run, export_onnx(run, task="rte", head="both", output=root / "exports" / "rte" / "onnx",
                            store_once=store_once)


@dataclass(frozen=True)
class TinyTree:
    """A folder as `tiny_rte_export` lays it out: runs/tiny (rte materialized, runs/latest beside it) and
    exports/rte/onnx (both heads). Manifests hold relative paths, so a copy of the whole tree works."""

    root: Path

    @property
    def run(self) -> Path:
        return self.root / "runs" / "tiny"

    @property
    def export(self) -> Path:
        return self.root / "exports" / "rte" / "onnx"

    def copy_to(self, root: Path) -> TinyTree:
        """A copy under `root` (created; may exist empty) to change at will: (run, export) via the result."""
        shutil.copytree(self.root, root, symlinks=True, dirs_exist_ok=True)
        return TinyTree(root)

    def copy_run_to(self, run: Path, tasks: bool = True) -> Path:
        """A copy of the run alone at `run`; `tasks=False`: as training left it, nothing materialized."""
        shutil.copytree(self.run, run, ignore=None if tasks else shutil.ignore_patterns(names.TASKS_DIR))
        return run


@contextmanager
def _shared(root: Path) -> Iterator[TinyTree]:
    """Yield the tree at `root` to share read-only; at the end, fail if any test wrote into it."""
    before = tree_digest(root)
    yield TinyTree(root)
    assert tree_digest(root) == before, f"a test wrote into the shared tree {root}: copy it (TinyTree.copy_to)"


@pytest.fixture(scope="session")
def tiny_rte(tmp_path_factory) -> Iterator[TinyTree]:
    """The tiny recipe trained once per session (per xdist worker), rte materialized, both heads exported
    (store_once). Shared: read it, or `copy_to` a folder of the test's own to change anything."""
    root = tmp_path_factory.mktemp("tiny-rte")
    tiny_rte_export(root)
    with _shared(root) as tree:
        yield tree


@pytest.fixture(scope="session")
def tiny_rte_three_graphs(tiny_rte, tmp_path_factory) -> Iterator[TinyTree]:
    """The session's tiny run copied, its rte exported with optimum's three generate graphs
    (store_once=False, what TensorRT engines are built from). Shared read-only, like `tiny_rte`."""
    from hyperexport.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("tiny-rte-three-graphs")
    tree = TinyTree(root)
    shutil.copytree(tiny_rte.root / "runs", root / "runs", symlinks=True, dirs_exist_ok=True)
    export_onnx(tree.run, task="rte", head="both", output=tree.export, store_once=False)
    with _shared(root) as shared:
        yield shared


def reseal(folder: Path) -> None:
    """Re-hash `folder` into its manifest after a test changed a file on purpose (a run that differs
    from the one an export came from, not tampering)."""
    import json

    from hyperexport.contracts import manifest as sealing
    from hyperexport.contracts import publish

    manifest = json.loads((folder / names.MANIFEST_FILE).read_text())
    manifest["files"] = sealing.sealed_files(folder, manifest["stage"])
    publish.write_json(folder / names.MANIFEST_FILE, manifest)


def verified_tiny_export(tree: TinyTree, root: Path) -> Path:
    """A copy of the session's tiny tree under `root` with a passed parity report on its export (what
    `serve` and `deploy` accept)."""
    from hyperexport.verify.parity import verify

    export = tree.copy_to(root).export
    assert verify(export, max_examples=8)["passed"]
    return export


# rte examples short enough for the tiny recipe's max_source_length (64 byte tokens, template included)
SHORT_RTE_EXAMPLES = [{"sentence1": f"a {word} fox", "sentence2": f"a {other}"}
                      for word, other in (("red", "cat"), ("big", "fox"), ("old", "dog"), ("shy", "fox"),
                                                ("sly", "hen"))]


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    import hashlib

    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256, or "dir"} of everything under `folder`: what a refused command must leave as it was."""
    from hyperexport.contracts import manifest as sealing

    return {p.relative_to(folder).as_posix(): sealing.sha256_file(p) if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def tensorrt_missing() -> str | None:
    """Why the GPU-marked TensorRT tests cannot run here, or None where they can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt package is not installed"
    import torch

    return None if torch.cuda.is_available() else "no CUDA GPU"
