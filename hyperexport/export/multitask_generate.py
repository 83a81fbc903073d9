"""The generate head of a multi-task export: optimum's three T5 graphs, each with one more input, `task_ids`.

optimum traces fixed inputs described by an `OnnxConfig`; `TaskIdsT5OnnxConfig` is its T5 config with
`task_ids` [batch] int64 added to every behavior's inputs and dummy inputs (zeros: row 0 exists in every
table). The submodels optimum splits T5 into (the encoder; the whole model as the first-step decoder and
as the decoder with past) are wrapped so that their forward takes `task_ids` last and routes it to the
stacked adapters. Everything else is optimum's own export: its model patcher (cache classes, mask
functions), graph and input/output names, dynamic axes and the post-export axis fix; so the graphs are
the single-task graphs' names and I/O plus `task_ids`. (ORTModelForSeq2SeqLM cannot feed `task_ids`:
hyperexport's own runtime, `runtime.generation.greedy_generate(extra=...)`, runs these graphs.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from hyperexport.contracts.task_table import TASK_IDS_INPUT
from hyperexport.export.generate import set_static_cache_dims
from hyperexport.export.tracing import DEFAULT_OPSET, quiet_tracing
from hyperexport.stack import StackedT5, TaskRouter

if TYPE_CHECKING:
    pass

OPTIMUM_TASK = "text2text-generation"
_FLOAT_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def task_ids_onnx_config():
    """optimum's T5 OnnxConfig with `task_ids` (made on first use: optimum is a heavy import)."""
    from optimum.exporters.onnx.model_configs import T5OnnxConfig
    from optimum.utils.input_generators import DummyInputGenerator

    class TaskIdsGenerator(DummyInputGenerator):
        SUPPORTED_INPUT_NAMES = (TASK_IDS_INPUT,)

        def __init__(self, batch_size: int):
            self.batch_size = batch_size

        def generate(self, input_name: str, framework: str = "pt", int_dtype: str = "int64", float_dtype: str = "fp32"):
            return self.random_int_tensor([self.batch_size], max_value=1, framework=framework, dtype=int_dtype)  # zeros

    class TaskIdsT5OnnxConfig(T5OnnxConfig):
        @property
        def inputs(self) -> dict[str, dict[int, str]]:
            return {**super().inputs, TASK_IDS_INPUT: {0: "batch_size"}}

        def _create_dummy_input_generator_classes(self, **kwargs):
            generators = super()._create_dummy_input_generator_classes(**kwargs)
            return [*generators, TaskIdsGenerator(generators[0].batch_size)]  # row 0: in every table

    return TaskIdsT5OnnxConfig


class RoutedEncoder(nn.Module):
    """T5's encoder stack whose forward takes `task_ids` (optimum orders graph inputs by this signature)."""

    def __init__(self, encoder: nn.Module, router: TaskRouter):
        super().__init__()
        self.encoder, self.router, self.config = encoder, router, encoder.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task_ids: torch.Tensor):
        with self.router.routing(task_ids):  # [B]
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask)


class RoutedSeq2Seq(nn.Module):
    """T5ForConditionalGeneration as optimum's decoder submodels call it, plus `task_ids` (after the past)."""

    def __init__(self, model: nn.Module, router: TaskRouter):
        super().__init__()
        self.model, self.router, self.config = model, router, model.config

    def forward(self, attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor, encoder_outputs,
                past_key_values=None, task_ids: torch.Tensor | None = None, use_cache: bool | None = None):
        with self.router.routing(task_ids):  # [B]
            return self.model(attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                              encoder_outputs=encoder_outputs, past_key_values=past_key_values, use_cache=use_cache)


def export_task_generate_graphs(stacked: StackedT5, folder: Path, opset: int = DEFAULT_OPSET) -> None:
    """encoder_model.onnx, decoder_model.onnx, decoder_with_past_model.onnx (+ config.json,
    generation_config.json) of a stacked T5 into `folder`, each graph taking `task_ids`."""
    from optimum.exporters.onnx.convert import export_models
    from optimum.exporters.utils import get_encoder_decoder_models_for_export

    model = stacked.model
    dtype = _FLOAT_DTYPES[next(model.parameters()).dtype]
    config = task_ids_onnx_config()(model.config, task=OPTIMUM_TASK, use_past=True, float_dtype=dtype)
    submodels = get_encoder_decoder_models_for_export(model, config)
    routed = {name: (_routed(submodel, stacked.router), onnx_config)
              for name, (submodel, onnx_config) in submodels.items()}
    with quiet_tracing():
        # bf16: skip optimum's axis fix, which runs each graph in ONNX Runtime's CPU provider (no bf16 kernels)
        export_models(routed, folder, opset=opset, output_names=[f"{name}.onnx" for name in routed],
                      dtype=dtype, disable_dynamic_axes_fix=dtype == "bf16")
    model.config.save_pretrained(folder)
    assert model.generation_config is not None  # a T5ForConditionalGeneration always has one
    model.generation_config.save_pretrained(folder)
    if dtype == "bf16":
        set_static_cache_dims(folder, model.config.num_heads, model.config.d_kv)


def _routed(submodel: nn.Module, router: TaskRouter) -> nn.Module:
    return RoutedSeq2Seq(submodel, router) if hasattr(submodel, "encoder") else RoutedEncoder(submodel, router)
