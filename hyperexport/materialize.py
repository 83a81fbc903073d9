"""`materialize`: evaluate the hypernetwork once for a task and keep what that task needs.

`runs/<run>/tasks/<task>/` is a `TaskFolder` (`contracts.task`): the adapter tensors and the trained
T5 layer norms, `task.json` (`TaskFacts`) and a manifest with the source checkpoint's sha256, the
backbone reference, parameter counts and sizes. Non-finite weights are refused (as PEFT's safe_merge refuses them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hyperexport.contracts import publish
from hyperexport.contracts.manifest import relative_path, sha256_file
from hyperexport.contracts.names import ADAPTERS_FILE
from hyperexport.contracts.run import RunFolder
from hyperexport.contracts.task import (
    ADAPTER_PREFIX,
    BACKBONE_PREFIX,
    AdapterFacts,
    TaskFacts,
    TaskManifest,
    write_task_manifest,
)
from hyperexport.errors import UserError
from hyperexport.tasks.registry import max_target_tokens

if TYPE_CHECKING:
    import torch

    from hyperexport.model.hyper_t5 import HyperT5
    from hyperexport.model.trained import TrainedRun


def materialize(run: str | Path | None = None, *, tasks: list[str] | None = None, output: Path | None = None,
                overwrite: bool = False) -> list[Path]:
    """Materialize `tasks` (all of the run's when None) of `run` (default runs/latest). The run, the task
    names and the destinations are checked before the model is loaded."""
    from hyperexport.model.trained import load_run

    folder = RunFolder.resolve(run)
    chosen = tasks or list(folder.manifest().tasks)
    folder.require_tasks(chosen)
    if output is not None and len(chosen) > 1:
        raise UserError("--output names one task folder: materialize one --task with it, or drop --output")
    destinations = {t: output or folder.task_dir(t) for t in chosen}
    taken = [str(d) for d in destinations.values() if d.exists()]
    if taken and not overwrite:
        raise UserError(f"{taken[0]} already exists: pass --overwrite to replace it")
    loaded = load_run(folder.path)
    return [_materialize_one(loaded, task, destinations[task]) for task in chosen]


def task_tensors(model: HyperT5, task: str) -> dict[str, torch.Tensor]:
    """The task's adapter tensors ([L, 2, ...] per stack) and the trained T5 layer norms, by file key."""
    import torch

    from hyperexport.model.adapter import STACKS

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


def _materialize_one(loaded: TrainedRun, task: str, destination: Path) -> Path:
    from safetensors.torch import save

    tensors = task_tensors(loaded.model, task)
    with publish.building(destination) as tmp:
        publish.write_bytes(tmp / ADAPTERS_FILE, save({k: v.cpu().clone() for k, v in tensors.items()}))
        _task_facts(loaded, task).write(tmp)
        write_task_manifest(tmp, _task_manifest(loaded, task, tensors, destination))
    return destination


def _task_facts(loaded: TrainedRun, task: str) -> TaskFacts:
    from hyperexport.model.adapter import ADAPTER_LAYER_NORM_EPS, POSITIONS

    spec = loaded.task_spec(task)
    config = loaded.model.model_config
    # with no tokenizer (an imported run) the recipe's target length bounds generation
    max_new_tokens = (max_target_tokens(spec, loaded.tokenizer) if loaded.tokenizer
                      else loaded.recipe.data.max_target_length)
    return TaskFacts(task=task, template=spec.template, labels=tuple(spec.labels), metrics=tuple(spec.metrics),
                     postprocess=spec.postprocess, is_regression=spec.is_regression, max_new_tokens=max_new_tokens,
                     max_source_length=loaded.recipe.data.max_source_length, label_names=spec.label_names,
                     adapter=AdapterFacts(activation=config.activation, layer_norm_eps=ADAPTER_LAYER_NORM_EPS,
                                          positions=POSITIONS, variant=config.variant))


def _task_manifest(loaded: TrainedRun, task: str, tensors: dict[str, torch.Tensor], destination: Path) -> TaskManifest:
    adapter_count = sum(t.numel() for k, t in tensors.items() if k.startswith(ADAPTER_PREFIX))
    backbone = sum(p.numel() for p in {id(p): p for p in loaded.model.backbone.parameters()}.values())
    backbone_dir = loaded.folder.backbone_dir
    return TaskManifest(
        task=task,
        source_run=relative_path(loaded.path, destination),
        source_checkpoint_sha256=sha256_file(loaded.folder.weights_file),
        backbone=loaded.folder.portable_backbone(loaded.recipe.backbone),
        backbone_weights=None if backbone_dir is None else relative_path(backbone_dir, destination),
        parameters={"backbone": backbone, "task_adapters": adapter_count,
                    "trained_layer_norms": sum(t.numel() for k, t in tensors.items() if k.startswith(BACKBONE_PREFIX))},
        bytes={"backbone_fp32": 4 * backbone, "task_adapters_fp32": 4 * adapter_count},
    )
