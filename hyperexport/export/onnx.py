"""`export --format onnx`: a materialized, folded task as ONNX graphs (no hypernetwork inside).

- generate head: optimum's T5 export with past key values, the two decoders kept separate (no merged
  graph with an `If` node, which TensorRT cannot take): `encoder_model.onnx`, `decoder_model.onnx`,
  `decoder_with_past_model.onnx` plus `config.json`, so `ORTModelForSeq2SeqLM` loads the folder;
- classify head: `classify_model.onnx`, `input_ids`, `attention_mask` -> `scores` [batch, num_labels],
  the teacher-forced log-probability of each label string (summed over its tokens) in one pass.
The folder also holds the tokenizer, `task.json`, `io_spec.json` and a manifest with every file's sha256.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from hyperexport.contracts import publish as artifacts
from hyperexport.errors import UserError
from hyperexport.export.precision import PRECISIONS, cast_to_precision

HEADS = ("generate", "classify", "both")
CLASSIFY_FILE = "classify_model.onnx"
ENCODER_FILE, DECODER_FILE = "encoder_model.onnx", "decoder_model.onnx"  # optimum's names for the generate head
IO_SPEC_FILE = "io_spec.json"
DEFAULT_OPSET = 18  # optimum recommends at least 18 for T5


class LabelScorer(nn.Module):
    """scores[b, k] = sum_t log p(label_k token t | input b, label_k tokens < t): no generation loop."""

    def __init__(self, model: nn.Module, label_ids: torch.Tensor):  # label_ids [K, T], -100 = padding
        super().__init__()
        self.model = model
        self.register_buffer("label_ids", label_ids.clamp(min=0), persistent=False)  # [K, T]
        self.register_buffer("label_mask", (label_ids >= 0).float(), persistent=False)  # [K, T]
        self.register_buffer("decoder_input_ids", model._shift_right(label_ids), persistent=False)  # [K, T]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # [B, S] -> [B, K]
        batch, num_labels = input_ids.shape[0], self.label_ids.shape[0]
        encoded = self.model.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                     use_cache=False).last_hidden_state  # [B, S, d]
        mask = attention_mask.repeat_interleave(num_labels, dim=0)  # [B*K, S]
        decoder_ids = self.decoder_input_ids.repeat(batch, 1)  # [B*K, T]
        with _cross_attention_once_per_example(self.model, num_labels):  # encoded stays [B, S, d]
            logits = self.model(encoder_outputs=(encoded,), attention_mask=mask, decoder_input_ids=decoder_ids,
                                use_cache=False).logits  # [B*K, T, V]
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        token_scores = log_probs.gather(-1, self.label_ids.repeat(batch, 1).unsqueeze(-1)).squeeze(-1)  # [B*K, T]
        return (token_scores * self.label_mask.repeat(batch, 1)).sum(-1).view(batch, num_labels)


class _RepeatedProjection(nn.Module):
    """A cross-attention key or value projection of each example's encoder states, repeated for the
    example's K label rows: [B, S, d] -> [B*K, S, inner] (not K projections of repeated states)."""

    def __init__(self, projection: nn.Module, repeats: int):
        super().__init__()
        self.projection, self.repeats = projection, repeats

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.projection(states).repeat_interleave(self.repeats, dim=0)


@contextlib.contextmanager
def _cross_attention_once_per_example(model: nn.Module, repeats: int):
    """Every decoder layer's cross-attention `k`/`v` as `_RepeatedProjection`s while the block runs."""
    attentions = [block.layer[1].EncDecAttention for block in model.decoder.block]
    originals = [(attention.k, attention.v) for attention in attentions]
    for attention, (k, v) in zip(attentions, originals):
        attention.k, attention.v = _RepeatedProjection(k, repeats), _RepeatedProjection(v, repeats)
    try:
        yield
    finally:
        for attention, (k, v) in zip(attentions, originals):
            attention.k, attention.v = k, v


def label_token_ids(tokenizer, labels: list[str]) -> torch.Tensor:
    """Each label string's token ids with </s>, padded with -100: [K, T]."""
    encoded = [tokenizer(label).input_ids for label in labels]
    length = max(len(ids) for ids in encoded)
    return torch.tensor([ids + [-100] * (length - len(ids)) for ids in encoded])


def export_onnx(run: str | Path | None = None, task: str = "", head: str = "both", opset: int = DEFAULT_OPSET,
                output: Path | None = None, overwrite: bool = False, precision: str = "fp32") -> Path:
    """Export the materialized `task` of `run` (default runs/latest) to `exports/<task>/onnx/`."""
    from hyperexport.fold import load_folded_task
    from hyperexport.materialize import TASK_FILE, TASKS_DIR
    from hyperexport.model.build import load_tokenizer

    if head not in HEADS:
        raise UserError(f"unknown head '{head}': use generate, classify or both")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}': use {', '.join(PRECISIONS)}")
    run_dir = artifacts.resolve_run(run)
    task_dir = run_dir / TASKS_DIR / task
    default = "onnx" if precision == "fp32" else f"onnx-{precision}"
    destination = Path(output) if output is not None else Path("exports") / task / default
    if destination.exists() and not overwrite:
        raise UserError(f"{destination} already exists: pass --overwrite to replace it, or choose another --output")
    model, facts = load_folded_task(task_dir)
    cast_to_precision(model, precision)
    tokenizer = load_tokenizer(str(run_dir / artifacts.TOKENIZER_DIR)) if (run_dir / artifacts.TOKENIZER_DIR).is_dir() else None
    if tokenizer is None and head != "generate":
        raise UserError(f"the {head} head needs the run's tokenizer and {run_dir} has none: export --head generate, "
                        "or import the checkpoint again with --tokenizer")
    with artifacts.building(destination) as tmp:
        if head in ("generate", "both"):
            export_generate_graphs(model, tmp, opset)
        if head in ("classify", "both"):
            export_classify_graph(model, label_token_ids(tokenizer, facts["labels"]), tmp / CLASSIFY_FILE, opset)
        if precision == "int8":
            quantize_folder(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / artifacts.TOKENIZER_DIR)
        shutil.copy(task_dir / TASK_FILE, tmp / TASK_FILE)
        artifacts.write_json(tmp / IO_SPEC_FILE, io_spec(tmp))
        artifacts.write_manifest(tmp, "export", format="onnx", head=head, precision=precision, opset=opset, folds=[],
                                 task=task, source_run=str(run_dir), source_task_sha256=artifacts.file_hashes(task_dir),
                                 backbone=_task_backbone(task_dir))
    return destination


def _task_backbone(task_dir: Path) -> dict:
    """The backbone reference (config, pretrained, tokenizer) the materialized task was made with."""
    import json

    return json.loads((task_dir / artifacts.MANIFEST_FILE).read_text())["backbone"]


def export_generate_graphs(model: nn.Module, folder: Path, opset: int = DEFAULT_OPSET) -> None:
    """optimum's encoder / decoder / decoder-with-past graphs of a plain or folded T5 into `folder`."""
    from optimum.exporters.onnx import onnx_export_from_model

    bf16 = next(model.parameters()).dtype == torch.bfloat16
    with _without_dynamic_axes_fix(bf16), _quiet_tracing():
        onnx_export_from_model(model, folder, task="text2text-generation-with-past", opset=opset,
                               no_post_process=True, do_validation=False)
    if bf16:
        _set_static_cache_dims(folder, model.config.num_heads, model.config.d_kv)


@contextlib.contextmanager
def _quiet_tracing():
    """Tracing T5 warns about Python branches it freezes (sequence length, cache state); the graphs are
    checked by `verify`, and the warnings would bury the command's own output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        yield


@contextlib.contextmanager
def _without_dynamic_axes_fix(active: bool):
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


def _set_static_cache_dims(folder: Path, num_heads: int, d_kv: int) -> None:
    """What `fix_dynamic_axes` does for T5: `present.*` [batch, heads, seq, d_kv] get static heads and d_kv."""
    import onnx

    for path in sorted(folder.glob("*.onnx")):
        graph_model = onnx.load(str(path))
        for value in graph_model.graph.output:
            if value.name.startswith("present."):
                dims = value.type.tensor_type.shape.dim
                dims[1].dim_value, dims[3].dim_value = num_heads, d_kv  # setting dim_value clears dim_param
        onnx.save(graph_model, str(path))


def export_classify_graph(model: nn.Module, label_ids: torch.Tensor, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """The `LabelScorer` of a plain or folded T5 as one graph: input_ids, attention_mask -> scores."""
    scorer = LabelScorer(model, label_ids).eval()
    example = (torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long))
    with torch.no_grad(), _quiet_tracing():
        torch.onnx.export(scorer, example, str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["scores"], opset_version=opset, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch_size", 1: "sequence_length"},
                                        "attention_mask": {0: "batch_size", 1: "sequence_length"},
                                        "scores": {0: "batch_size"}})


def quantize_folder(folder: Path) -> None:
    """Dynamic int8 quantization (weights int8, activations quantized at run time) of every graph's MatMuls."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for path in sorted(folder.glob("*.onnx")):
        quantized = path.with_name(f".{path.name}.int8")
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        quantized.replace(path)


def io_spec(folder: Path) -> dict:
    """Names, element types and shapes (symbolic axes by name) of every graph's inputs and outputs."""
    import onnx

    def describe(values) -> list[dict]:
        return [{"name": v.name, "dtype": onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower(),
                 "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]} for v in values]

    spec = {}
    for path in sorted(folder.glob("*.onnx")):
        graph = onnx.load(str(path), load_external_data=False).graph
        spec[path.name] = {"inputs": describe(graph.input), "outputs": describe(graph.output)}
    return spec
