"""The state-dict layout of the original HyperFormer code (rabeehk/hyperformer, transformers 3.5.1) and
its exact mapping onto `HyperT5`'s parameters.

`assemble_state` reads every tensor our model needs from the original state dict (stacking per-task,
per-layer and per-position tensors into our batched parameters) and remembers which original keys it
used; a key it needed but did not find is missing, a key it never used is unknown. Spellings are the
original's, including `task_embeding_generator` and `adapters_block_type`.
"""

from __future__ import annotations

import torch

from hyperexport.errors import UserError
from hyperexport.model.adapter import POSITIONS, STACKS

HYPERNET = "adapter_layers_hyper_net."  # per-stack controller of hyperformer++ / hyperformer-layer
TASK_EMBEDDINGS = "task_embedding_controller."


class OriginalState:
    """The original tensors, with bookkeeping of the keys read and the keys that were not there."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors
        self.used: set[str] = set()
        self.missing: list[str] = []

    def get(self, key: str) -> torch.Tensor:
        self.used.add(key)
        if key not in self.tensors:
            self.missing.append(key)
            return torch.zeros(0)
        return self.tensors[key].float()

    def linear(self, prefix: str) -> dict[str, torch.Tensor]:
        return {"weight": self.get(f"{prefix}weight"), "bias": self.get(f"{prefix}bias")}

    def unknown(self) -> list[str]:
        return sorted(set(self.tensors) - self.used)


def assemble_state(model, original: OriginalState,
                   conditional_layer_norm: bool) -> dict[str, torch.Tensor | None]:
    """Our model's state dict (backbone included), every tensor taken from `original` (None: a generator
    weight the caller fills with zeros)."""
    state: dict[str, torch.Tensor | None] = {f"backbone.{key}": original.get(key)
                                             for key in model.backbone.state_dict()}
    if model.task_embeddings is not None:
        state.update(_task_embeddings(model, original))
    variant = model.model_config.variant
    for stack in STACKS:
        generator = f"generators.{stack}."
        parts: dict[str, torch.Tensor] | dict[str, torch.Tensor | None]
        if variant == "hyperformer++":
            parts = _hypernet_plus_plus(original, f"{stack}.{HYPERNET}")
        elif variant == "hyperformer-layer":
            parts = _layer_hypernet(original, f"{stack}.{HYPERNET}")
        elif variant == "hyperformer":
            parts = _per_position_hypernets(original, _sublayers(model, stack), conditional_layer_norm)
        else:
            parts = _task_adapters(original, _sublayers(model, stack), model.task_names)
        state.update({generator + name: tensor for name, tensor in parts.items()})
    return state


def check_complete(original: OriginalState, source: str) -> None:
    """One line naming the unknown and missing keys, if any."""
    unknown, missing = original.unknown(), original.missing
    if unknown or missing:
        def listed(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "") if keys else "none"

        raise UserError(f"{source} is not a checkpoint of the original HyperFormer layout its arguments describe: "
                        f"{len(unknown)} unknown keys: {listed(unknown)}; {len(missing)} missing keys: "
                        f"{listed(missing)}; check the training-arguments JSON (variant, tasks) matches it")


def _task_embeddings(model, original: OriginalState) -> dict[str, torch.Tensor]:
    rows = [original.get(f"{TASK_EMBEDDINGS}task_to_embeddings.{task}") for task in model.task_names]
    state = {"task_embeddings.weight": _stack(rows)}  # [T, t']
    if model.task_embeddings.projector is not None:
        for index in (0, 2):
            for name, t in original.linear(f"{TASK_EMBEDDINGS}task_hyper_net.task_embeding_generator.{index}.").items():
                state[f"task_embeddings.projector.{index}.{name}"] = t
    return state


def _hypernet_shared_parts(original: OriginalState, prefix: str) -> dict[str, torch.Tensor]:
    state = {"layer_id_embeddings.weight": original.get(f"{prefix}layer_id_embeddings.weight")}
    for index in (0, 2):
        for name, t in original.linear(f"{prefix}task_hypernet.task_embeding_generator.{index}.").items():
            state[f"projector.{index}.{name}"] = t
    state.update({f"projector_norm.{name}": t for name, t in original.linear(f"{prefix}LayerNorm.").items()})
    return state


def _generator_sources(prefix: str) -> dict[str, str]:
    """Our generator name -> the original Linear's key prefix (the original names up/down by sampler)."""
    return {
        "down_weight": f"{prefix}down_sampler_hyper_net.weight_generator.0.",
        "down_bias": f"{prefix}down_sampler_hyper_net.bias_generator.0.",
        "up_weight": f"{prefix}up_sampler_hyper_net.weight_generator.0.",
        "up_bias": f"{prefix}up_sampler_hyper_net.bias_generator.0.",
        "ln_weight": f"{prefix}post_layernorm_hypernet.weight_generator.",
        "ln_bias": f"{prefix}post_layernorm_hypernet.bias_generator.",
    }


def _hypernet_plus_plus(original: OriginalState, prefix: str) -> dict[str, torch.Tensor]:
    """HyperFormer++ (`AdapterLayersOneHyperNetController`): block type embedding = our positions."""
    state = _hypernet_shared_parts(original, prefix)
    state["position_embeddings.weight"] = original.get(f"{prefix}adapters_block_type.weight")
    for ours, source in _generator_sources(prefix).items():
        state.update({f"{ours}.{name}": t for name, t in original.linear(source).items()})
    return state


def _layer_hypernet(original: OriginalState, prefix: str) -> dict[str, torch.Tensor]:
    """`AdapterLayersHyperNetController`: `feed_forward_*` / `self_attention_*` generators per position."""
    state = _hypernet_shared_parts(original, prefix)
    per_position = [_generator_sources(f"{prefix}{position}_") for position in POSITIONS]  # position 0 = FFN
    for ours in per_position[0]:
        linears = [original.linear(sources[ours]) for sources in per_position]
        state.update({f"{ours}.{name}": _stack([linear[name] for linear in linears]) for name in ("weight", "bias")})
    return state


def _sublayers(model, stack: str) -> list[list[str]]:
    """Per layer, the original adapter controller's key prefix at each position: [L][2]."""
    blocks = getattr(model.backbone, stack).block
    feed_forward = 2 if stack == "decoder" else 1  # the decoder's layer 1 is cross-attention (no adapter)
    return [[f"{stack}.block.{layer}.layer.{feed_forward}.adapter_controller.",
             f"{stack}.block.{layer}.layer.0.adapter_controller."] for layer in range(len(blocks))]


def _per_position_hypernets(original: OriginalState, sublayers: list[list[str]],
                            conditional_layer_norm: bool) -> dict[str, torch.Tensor | None]:
    """`MetaAdapterController` in every sublayer -> `PerPositionHyperNets` (index layer * 2 + position).

    Without conditional layer norm the original keeps one plain LayerNorm per sublayer: a generator with
    zero weight and the LayerNorm's parameters as bias produces exactly those parameters for every task.
    """
    prefixes = [prefix for layer in sublayers for prefix in layer]
    sources = {
        "down_weight": "meta_down_sampler.weight_generator.0.", "down_bias": "meta_down_sampler.bias_generator.0.",
        "up_weight": "meta_up_sampler.weight_generator.0.", "up_bias": "meta_up_sampler.bias_generator.0.",
    }
    state: dict[str, torch.Tensor | None] = {}  # None: a generator weight the caller fills with zeros
    for ours, source in sources.items():
        linears = [original.linear(prefix + source) for prefix in prefixes]
        state.update({f"{ours}.{name}": _stack([linear[name] for linear in linears]) for name in ("weight", "bias")})
    for ours, part in (("ln_weight", "weight"), ("ln_bias", "bias")):
        if conditional_layer_norm:
            linears = [original.linear(f"{prefix}post_layernorm_hypernet.{part}_generator.") for prefix in prefixes]
            state[f"{ours}.weight"] = _stack([linear["weight"] for linear in linears])  # [2L, d, t]
            state[f"{ours}.bias"] = _stack([linear["bias"] for linear in linears])  # [2L, d]
        else:
            state[f"{ours}.bias"] = _stack([original.get(f"{prefix}post_layer_norm.{part}") for prefix in prefixes])
            state[f"{ours}.weight"] = None  # zeros of the generator's shape, filled in by the caller
    return state


def _task_adapters(original: OriginalState, sublayers: list[list[str]], tasks) -> dict[str, torch.Tensor]:
    """`AdapterController` in every sublayer: per-task adapters and one post-LayerNorm per sublayer."""
    sources = {"down_weight": "down_sampler.weight", "down_bias": "down_sampler.bias",
               "up_weight": "up_sampler.weight", "up_bias": "up_sampler.bias"}
    state = {ours: _stack([_stack([_stack([original.get(f"{prefix}adapters.{task}.{source}") for prefix in layer])
                                   for layer in sublayers]) for task in tasks])  # [T, L, 2, ...]
             for ours, source in sources.items()}
    for ours, part in (("ln_weight", "weight"), ("ln_bias", "bias")):
        state[ours] = _stack([_stack([original.get(f"{prefix}post_layer_norm.{part}") for prefix in layer])
                              for layer in sublayers])  # [L, 2, d]
    return state


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack, tolerating missing entries (empty tensors) so that every missing key gets listed."""
    if any(t.numel() == 0 for t in tensors):
        return torch.zeros(0)
    return torch.stack(tensors)
