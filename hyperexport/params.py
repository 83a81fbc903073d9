"""Parameter accounting the way the paper's Table 1 counts (method §5), offline: the model is
built on the meta device, so even t5-large costs no memory and no download."""

from __future__ import annotations

import torch

from hyperexport.backbones import backbone_config
from hyperexport.model.hyper_t5 import HyperT5, is_t5_layer_norm


def _numel(params) -> int:
    return sum(p.numel() for p in params)


def count_parameters(model: HyperT5) -> dict:
    """Backbone, trainable, shared and per-task counts, and the paper's two ratio columns."""
    num_tasks = len(model.task_names)
    backbone = _numel({id(p): p for p in model.backbone.parameters()}.values())
    layer_norms = _numel(m.weight for m in model.backbone.modules() if is_t5_layer_norm(m))
    per_task = _per_task_parameters(model)
    added = _numel(model.generators.parameters())
    if model.task_embeddings is not None:
        added += _numel(model.task_embeddings.parameters())
    trainable = _numel(p for p in model.parameters() if p.requires_grad)
    return {
        "num_tasks": num_tasks,
        "backbone_parameters": backbone,
        "t5_layer_norm_parameters": layer_norms,
        "added_parameters": added,
        "trainable_parameters": trainable,
        "per_task_parameters": per_task,
        "shared_trainable_parameters": trainable - per_task * num_tasks,
        "trainable_per_task_percent": 100.0 * trainable / num_tasks / backbone,
        "total_ratio": (backbone + added) / backbone,
    }


def _per_task_parameters(model: HyperT5) -> int:
    """What one more task adds: its embedding (hypernet variants) or its own adapters (plain adapters)."""
    if model.task_embeddings is not None:
        return model.task_embeddings.weight.shape[1]
    per_task = ("down_weight", "down_bias", "up_weight", "up_bias")
    return sum(getattr(g, name)[0].numel() for g in model.generators.values() for name in per_task)


def parameter_report(recipe) -> dict:
    """`count_parameters` for a recipe's model, built on the meta device from its backbone config."""
    model = _meta_model(recipe.backbone.config, [t.name for t in recipe.tasks], recipe.model)
    return {"recipe": recipe.name, "backbone": recipe.backbone.config, "variant": recipe.model.variant,
            **count_parameters(model)}


def per_task_adapter_parameters(recipe) -> int:
    """What one task adds as a plain per-task adapter (the `adapters` variant) on the recipe's backbone
    at its reduction factor: down/up weights and biases at every layer and position."""
    from dataclasses import replace

    plain = replace(recipe.model, variant="adapters", task_projector_input_dim=None)
    return _per_task_parameters(_meta_model(recipe.backbone.config, ["task"], plain))


def _meta_model(backbone: str, task_names: list[str], model_config) -> HyperT5:
    from transformers import T5ForConditionalGeneration

    config = backbone_config(backbone)  # the architecture, also for pretrained backbones
    with torch.device("meta"):
        return HyperT5(T5ForConditionalGeneration(config), task_names, model_config)

