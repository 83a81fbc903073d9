"""`materialize`: evaluate the hypernetwork once for a task and keep what that task needs.

`runs/<run>/tasks/<task>/` holds
- `adapters.safetensors`: `adapters.<stack>.<tensor>` of shape [L, 2, ...] (position 0 = after the
  feed-forward, 1 = after self-attention; layout (out, in)) and `backbone.<name>`: the run's trained
  T5 layer norms, so the folder plus the plain backbone is the whole task;
- `task.json`: template, label strings, metrics, post-processing, generation length, adapter facts;
- `manifest.json`: the source checkpoint's sha256, backbone reference, parameter counts and sizes.
Non-finite weights are refused (as PEFT's safe_merge refuses them).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save

from hyperexport.contracts import publish as artifacts
from hyperexport.errors import UserError
from hyperexport.model.adapter import ADAPTER_LAYER_NORM_EPS, STACKS

TASKS_DIR = artifacts.TASKS_DIR
ADAPTERS_FILE = "adapters.safetensors"
TASK_FILE = "task.json"
ADAPTER_PREFIX = "adapters."
BACKBONE_PREFIX = "backbone."


def materialize(run: str | Path | None = None, tasks: list[str] | None = None, output: Path | None = None,
                overwrite: bool = False) -> list[Path]:
    """Materialize `tasks` (all of the run's when None) of `run` (default runs/latest)."""
    from hyperexport.model.trained import load_run

    loaded = load_run(run)
    chosen = tasks or list(loaded.model.task_names)
    loaded.check_tasks(chosen)
    if output is not None and len(chosen) > 1:
        raise UserError("--output names one task folder: materialize one --task with it, or drop --output")
    destinations = {t: output or loaded.path / TASKS_DIR / t for t in chosen}
    taken = [str(d) for d in destinations.values() if d.exists()]
    if taken and not overwrite:
        raise UserError(f"{taken[0]} already exists: pass --overwrite to replace it")
    return [_materialize_one(loaded, task, destinations[task]) for task in chosen]


def task_tensors(model, task: str) -> dict[str, torch.Tensor]:
    """The task's adapter tensors ([L, 2, ...] per stack) and the trained T5 layer norms, by file key."""
    with torch.no_grad():
        weights = model.adapter_weights(torch.tensor([model.task_id(task)]))
    tensors = {f"{ADAPTER_PREFIX}{stack}.{name}": t[0].contiguous()
               for stack in STACKS for name, t in weights[stack].tensors().items()}
    tensors.update({f"{BACKBONE_PREFIX}{name}": p.detach().contiguous()
                    for name, p in model.backbone.named_parameters() if p.requires_grad})
    bad = [key for key, t in tensors.items() if not torch.isfinite(t).all()]
    if bad:
        raise UserError(f"task '{task}' has non-finite weights ({bad[0]}, {len(bad)} tensors): "
                        "refusing to materialize; retrain or resume from an earlier checkpoint")
    return tensors


def _materialize_one(loaded, task: str, destination: Path) -> Path:
    tensors = task_tensors(loaded.model, task)
    with artifacts.building(destination) as tmp:
        artifacts.write_bytes(tmp / ADAPTERS_FILE, save({k: v.cpu().clone() for k, v in tensors.items()}))
        artifacts.write_json(tmp / TASK_FILE, _task_facts(loaded, task))
        artifacts.write_manifest(tmp, "materialize", **_manifest_facts(loaded, task, tensors))
    return destination


def _task_facts(loaded, task: str) -> dict:
    from hyperexport.tasks.registry import max_target_tokens

    spec = loaded.task_spec(task)
    config = loaded.model.model_config
    return {
        "task": task,
        "template": spec.template,
        "labels": list(spec.labels),
        "metrics": list(spec.metrics),
        "postprocess": spec.postprocess,
        "is_regression": spec.is_regression,
        # with no tokenizer (an imported run) the recipe's target length bounds generation
        "max_new_tokens": max_target_tokens(spec, loaded.tokenizer) if loaded.tokenizer else loaded.recipe.data.max_target_length,
        "max_source_length": loaded.recipe.data.max_source_length,
        "adapter": {"activation": config.activation, "layer_norm_eps": ADAPTER_LAYER_NORM_EPS,
                    "positions": ["feed_forward", "self_attention"], "variant": config.variant},
    }


def _manifest_facts(loaded, task: str, tensors: dict[str, torch.Tensor]) -> dict:
    adapter = {k: t for k, t in tensors.items() if k.startswith(ADAPTER_PREFIX)}
    backbone = sum(p.numel() for p in {id(p): p for p in loaded.model.backbone.parameters()}.values())
    adapter_count = sum(t.numel() for t in adapter.values())
    return {
        "task": task,
        "source_run": str(loaded.path),
        "source_checkpoint_sha256": artifacts.sha256_file(loaded.path / artifacts.WEIGHTS_FILE),
        "backbone": asdict(loaded.recipe.backbone),
        "backbone_weights": str(loaded.path / artifacts.BACKBONE_DIR) if (loaded.path / artifacts.BACKBONE_DIR).is_dir() else None,
        "parameters": {"backbone": backbone, "task_adapters": adapter_count,
                       "trained_layer_norms": sum(t.numel() for k, t in tensors.items() if k.startswith(BACKBONE_PREFIX))},
        "bytes": {"backbone_fp32": 4 * backbone, "task_adapters_fp32": 4 * adapter_count},
    }
