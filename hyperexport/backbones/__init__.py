"""Packaged T5 backbone configurations, one JSON file per preset.

`t5-small`, `t5-base`, `t5-large` are the original T5 v1.0 shapes (the paper's checkpoints: method §9
warns against v1.1). `t5-demo` and `t5-test` are tiny random-init shapes whose vocabulary (384) fits the
tokenizers made in code (ByT5's bytes, the demo's words), so the demo and the tests run offline; `t5-demo`
has the v1.1 gated FFN so that both FFN kinds get exercised. transformers and torch are imported only inside
the functions that need them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from hyperexport.contracts.names import TRANSFORMERS_CONFIG_FILE
from hyperexport.errors import UserError

if TYPE_CHECKING:
    from transformers import T5Config

_DIR = Path(__file__).parent

PRESETS: tuple[str, ...] = tuple(sorted(path.stem for path in _DIR.glob("*.json")))


def backbone_config(name_or_path: str) -> T5Config:
    """The `T5Config` of a preset name, of a config.json file, or of a folder holding one."""
    from transformers import T5Config

    path = _DIR / f"{name_or_path}.json" if name_or_path in PRESETS else Path(name_or_path).expanduser()
    if path.is_dir():
        path = path / TRANSFORMERS_CONFIG_FILE
    if not path.is_file():
        raise UserError(
            f"unknown backbone {name_or_path!r}: use a preset ({', '.join(PRESETS)}) "
            "or the path of a T5 config.json"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read backbone config {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("model_type", "t5") != "t5":
        raise UserError(f"backbone config {path} is not a T5 config (its model_type must be 't5')")
    return T5Config.from_dict(data)


def backbone_param_count(config: T5Config) -> int:
    """Parameters of `T5ForConditionalGeneration(config)`, each shared tensor counted once.

    The model is built on the meta device: no memory, no weights, no download.
    """
    import torch
    from transformers import T5ForConditionalGeneration

    with torch.device("meta"):
        model = T5ForConditionalGeneration(config)
    return sum(parameter.numel() for parameter in model.parameters())  # parameters() skips repeats
