"""Build a `HyperT5` from a recipe: the backbone first (pretrained or random from a config), then the
adapter modules attached and initialised after loading (method §4: `from_pretrained` builds on the
meta device with init disabled, so nothing of ours may be created inside it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hyperexport.backbones import backbone_config as config_of
from hyperexport.contracts.names import TRANSFORMERS_WEIGHT_FILES
from hyperexport.data.demo import demo_vocabulary
from hyperexport.data.word_tokenizer import word_level_tokenizer
from hyperexport.errors import UserError
from hyperexport.hub import load_from_hub
from hyperexport.model.hyper_t5 import HyperT5

if TYPE_CHECKING:
    from transformers import T5ForConditionalGeneration

OFFLINE_TOKENIZER = ("set backbone.tokenizer to a local folder (save_pretrained), or to byt5 or demo-words, "
                     "which need no files")
OFFLINE_BACKBONE = ("set backbone.pretrained to a local folder of T5 weights (save_pretrained), "
                    "or null for random weights")
BYTE_TOKENIZER = "byt5"  # ByT5's byte tokenizer: needs no files
DEMO_WORD_TOKENIZER = "demo-words"  # one token per word of the demo's synthetic vocabulary


def load_tokenizer(name_or_path: str):
    """A tokenizer made in code ("byt5", "demo-words"), else one from a hub id or a folder."""
    from transformers import AutoTokenizer, ByT5Tokenizer

    if name_or_path == BYTE_TOKENIZER:
        return ByT5Tokenizer()
    if name_or_path == DEMO_WORD_TOKENIZER:
        return word_level_tokenizer(demo_vocabulary())
    try:
        if Path(name_or_path).expanduser().is_dir():
            return AutoTokenizer.from_pretrained(name_or_path)
        return load_from_hub(AutoTokenizer.from_pretrained, name_or_path, "tokenizer", OFFLINE_TOKENIZER)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load tokenizer '{name_or_path}': {str(error).splitlines()[0]}") from None


def load_backbone(backbone_config, seed: int, weights_dir: Path | None = None) -> T5ForConditionalGeneration:
    """T5ForConditionalGeneration: from `weights_dir` (a run's saved backbone), the recipe's pretrained
    weights, or randomly initialised from the recipe's config with `seed`."""
    from transformers import T5ForConditionalGeneration

    source = weights_dir or backbone_config.pretrained
    if source is None:
        torch.manual_seed(seed)
        backbone = T5ForConditionalGeneration(config_of(backbone_config.config))
        table = None
    else:
        try:
            if Path(source).expanduser().is_dir():
                backbone = T5ForConditionalGeneration.from_pretrained(str(source))
            else:
                backbone = load_from_hub(T5ForConditionalGeneration.from_pretrained, str(source), "backbone",
                                         OFFLINE_BACKBONE)
        except (OSError, ValueError) as error:
            raise UserError(f"cannot load backbone '{source}': {str(error).splitlines()[0]}") from None
        table = _saved_legacy_bias(Path(source)) if backbone_config.legacy_cross_attention_bias else None
    if backbone_config.legacy_cross_attention_bias:
        add_legacy_cross_attention_bias(backbone, table)
    return backbone


LEGACY_CROSS_ATTENTION_BIAS_KEY = "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"


def add_legacy_cross_attention_bias(backbone, table: torch.Tensor | None = None) -> None:
    """Give decoder block 0's cross-attention the relative-position bias table of transformers 3.5's T5.

    Current transformers computes the bias a block's first cross-attention returns, and its decoder stack
    hands that bias to every later layer, as 3.5 did; only the table (and the bucketing direction) is gone.
    `table` [num_buckets, num_heads]; None keeps a freshly initialised one.
    """
    from torch import nn

    config = backbone.config
    attention = backbone.decoder.block[0].layer[1].EncDecAttention
    attention.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets, config.num_heads)
    attention.has_relative_attention_bias = True
    attention.is_decoder = False  # compute_bias buckets bidirectionally exactly when is_decoder is False
    if table is not None:
        with torch.no_grad():
            attention.relative_attention_bias.weight.copy_(table)
    attention.relative_attention_bias.requires_grad_(False)


def _saved_legacy_bias(folder: Path) -> torch.Tensor:
    """The legacy table from a saved backbone folder (from_pretrained drops the key as unexpected)."""
    from safetensors import safe_open

    path = folder / TRANSFORMERS_WEIGHT_FILES[0]
    if path.is_file():
        with safe_open(str(path), framework="pt") as handle:
            if LEGACY_CROSS_ATTENTION_BIAS_KEY in handle.keys():
                return handle.get_tensor(LEGACY_CROSS_ATTENTION_BIAS_KEY)
    raise UserError(f"backbone '{folder}' has no {LEGACY_CROSS_ATTENTION_BIAS_KEY} in model.safetensors, which "
                    "backbone.legacy_cross_attention_bias needs: import the checkpoint again")


def check_tokenizer_fits(tokenizer, config) -> None:
    if len(tokenizer) > config.vocab_size:
        raise UserError(
            f"tokenizer has {len(tokenizer)} tokens but the backbone's vocabulary has {config.vocab_size}: "
            "use the tokenizer the backbone was trained with"
        )


def build_model(recipe, task_names: Sequence[str], weights_dir: Path | None = None) -> HyperT5:
    """Backbone + adapters for `task_names` (their order defines the task ids), seeded by the recipe."""
    backbone = load_backbone(recipe.backbone, recipe.train.seed, weights_dir)
    torch.manual_seed(recipe.train.seed + 1)  # adapter init does not depend on how the backbone was made
    return HyperT5(backbone, task_names, recipe.model)
