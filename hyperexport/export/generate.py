"""The generate head: optimum's T5 export with past key values, the two decoders kept separate (no
merged graph with an `If` node, which TensorRT cannot take): `encoder_model.onnx`, `decoder_model.onnx`,
`decoder_with_past_model.onnx` plus `config.json` (what `ORTModelForSeq2SeqLM` loads; `export.onnx`
then lays them out with one decoder and each weight stored once)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hyperexport.export.tracing import DEFAULT_OPSET, quiet_tracing

if TYPE_CHECKING:
    from transformers import T5ForConditionalGeneration


def export_generate_graphs(model: T5ForConditionalGeneration, folder: Path, opset: int = DEFAULT_OPSET) -> None:
    """optimum's encoder / decoder / decoder-with-past graphs of a plain or folded T5 into `folder`."""
    from optimum.exporters.onnx import onnx_export_from_model

    bf16 = next(model.parameters()).dtype == torch.bfloat16
    with _without_dynamic_axes_fix(bf16), quiet_tracing():
        onnx_export_from_model(model, folder, task="text2text-generation-with-past", opset=opset,
                               no_post_process=True, do_validation=False)
    if bf16:
        set_static_cache_dims(folder, model.config.num_heads, model.config.d_kv)


@contextlib.contextmanager
def _without_dynamic_axes_fix(active: bool) -> Iterator[None]:
    """Skip optimum's post-export `fix_dynamic_axes`, which opens each graph in ONNX Runtime's CPU
    provider (no bf16 kernels) to read the static sizes of the `present.*` outputs' head axes."""
    from optimum.exporters.onnx.base import OnnxConfig

    original = OnnxConfig.fix_dynamic_axes
    if active:
        OnnxConfig.fix_dynamic_axes = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        OnnxConfig.fix_dynamic_axes = original


def set_static_cache_dims(folder: Path, num_heads: int, d_kv: int) -> None:
    """What `fix_dynamic_axes` does for T5: `present.*` [batch, heads, seq, d_kv] get static heads and d_kv."""
    import onnx

    for path in sorted(folder.glob("*.onnx")):
        graph_model = onnx.load(str(path))
        for value in graph_model.graph.output:
            if value.name.startswith("present."):
                dims = value.type.tensor_type.shape.dim
                dims[1].dim_value, dims[3].dim_value = num_heads, d_kv  # setting dim_value clears dim_param
        onnx.save(graph_model, str(path))
