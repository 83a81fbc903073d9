"""Export precisions: which dtype each part of a folded model runs in, and how far that moves its outputs.

- fp32: everything fp32.
- fp16: everything fp16 except each feed-forward's `wo` and the adapter that follows it, which stay fp32.
  T5's `wo` outputs overflow fp16's ±65504 (transformers keeps `wo` in fp32 for this reason,
  `_keep_in_fp32_modules = ["wo"]`); its T5DenseActDense casts `wo`'s input up, so the residual stream
  after the first feed-forward is fp32 too, and every layer norm casts back down for the next sublayer.
- bf16: everything bf16 (fp32's exponent range: no overflow, 8 bits of mantissa).
- int8: the fp32 graph, then ONNX Runtime's dynamic quantization (`onnx_export.quantize_folder`).
The precision lives in the graph itself (strongly typed TensorRT takes no precision flags).
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from hyperexport.options import PRECISIONS

FLOAT_PRECISIONS = tuple(p for p in PRECISIONS if p != "int8")  # what a graph's floats are (TensorRT's choices too)
HALF_PRECISIONS = ("fp16", "bf16")
ModuleT = TypeVar("ModuleT", bound=nn.Module)
FLOAT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.float32}


def cast_to_precision(model: ModuleT, precision: str) -> ModuleT:
    """Cast a folded T5 in place to `precision`'s dtype, with fp16's fp32 islands; returns it."""
    from hyperexport.fold import AdaptedFeedForward

    model.to(FLOAT_DTYPES[precision])
    if precision == "fp16":
        for module in model.modules():
            if isinstance(module, AdaptedFeedForward):
                module.adapter.float()
            if hasattr(module, "wo"):  # T5DenseActDense / T5DenseGatedActDense
                module.wo.float()
    return model

