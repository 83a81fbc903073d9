"""The HF Accelerator that `train`, `adapt` and `bench --train` run on: one CPU, one GPU, or several
processes under `accelerate launch`, with the recipe's mixed precision."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hyperexport.errors import UserError
from hyperexport.options import DEVICES as OPTION_DEVICES

if TYPE_CHECKING:
    from accelerate import Accelerator

DEVICES = OPTION_DEVICES
PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # recipe name -> Accelerate's mixed_precision


def accelerator_for(device: str, precision: str) -> Accelerator:
    """An Accelerator on `device` ("auto": a CUDA GPU when one is visible, else the CPU); a device or
    precision this machine cannot run is a one-line error."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if device not in DEVICES:
        raise UserError(f"unknown device '{device}': use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA GPU is visible: use --device cpu or auto")
    on_cpu = device == "cpu" or not torch.cuda.is_available()
    if precision == "fp16" and on_cpu:
        raise UserError("precision fp16 needs a CUDA GPU: use bf16 or fp32 on CPU")
    AcceleratorState._reset_state()  # a second command in one process may use another device or precision
    return Accelerator(cpu=on_cpu, mixed_precision=PRECISIONS[precision])
