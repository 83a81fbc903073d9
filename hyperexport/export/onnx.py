"""`export --format onnx`: a materialized, folded task as ONNX graphs (no hypernetwork inside).

- generate head (`export.generate`): optimum's encoder / decoder / decoder-with-past graphs and
  `config.json`, then (`finish_graphs`) one decoder for every step, each weight stored once, int8
  embeddings and optionally `generate_model.onnx`; `store_once=False` keeps optimum's three graphs
  (`ORTModelForSeq2SeqLM` loads those; TensorRT engines are built from them);
- classify head (`export.classify`): `classify_model.onnx`, `input_ids`, `attention_mask` -> `scores`
  [batch, num_labels], the teacher-forced log-probability of each label string in one pass.
The folder (`contracts.export.ExportFolder`) also holds the tokenizer, `task.json`, `io_spec.json` and a
manifest with every file's sha256. Every argument and input folder is checked before torch and the
exporters are imported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hyperexport.contracts import publish
from hyperexport.contracts.export import ExportManifest, GraphIo, IoSpec, TensorSpec, write_export_manifest
from hyperexport.contracts.manifest import file_hashes, relative_path
from hyperexport.contracts.names import CLASSIFY_GRAPH, TOKENIZER_DIR, default_export_dir
from hyperexport.contracts.run import RunFolder
from hyperexport.contracts.task import TaskFolder
from hyperexport.errors import UserError
from hyperexport.options import (
    DEFAULT_HEAD,
    DEFAULT_OPSET,
    DEFAULT_PRECISION,
    EXPORT_HEADS,
    PRECISIONS,
    ExportHead,
    Precision,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase, T5ForConditionalGeneration

HEADS = EXPORT_HEADS


def export_onnx(run: str | Path | None = None, *, task: str, head: ExportHead = DEFAULT_HEAD,
                opset: int = DEFAULT_OPSET, output: Path | None = None, overwrite: bool = False,
                precision: Precision = DEFAULT_PRECISION, generate_graph: bool = False,
                store_once: bool = True) -> Path:
    """Export the materialized `task` of `run` (default runs/latest) to `exports/<task>/onnx[-precision]/`.
    `generate_graph`: also `generate_model.onnx` (ONNX Runtime only). `store_once=False` keeps optimum's
    three generate graphs, each with its own weights (what TensorRT engines are built from)."""
    check_options(head, precision)
    check_generate_graph(head, precision, generate_graph, store_once)
    run_folder = RunFolder.resolve(run)
    run_folder.require_tasks([task])
    task_dir = run_folder.task_dir(task)
    materialized = TaskFolder.open(task_dir)
    destination = Path(output) if output is not None else default_export_dir(task, "onnx", precision)
    refuse_existing(destination, overwrite)
    check_tokenizer(run_folder, head)
    from hyperexport.export.classify import label_token_ids  # torch and the exporters: after every check
    from hyperexport.fold import load_folded_task

    model, facts = load_folded_task(task_dir)
    tokenizer = run_tokenizer(run_folder)
    with publish.building(destination) as tmp:
        labels = label_token_ids(tokenizer, facts.labels) if head != "generate" and tokenizer else None
        write_graphs(model, labels, head, precision, opset, tmp, store_once=store_once, generate_graph=generate_graph)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / TOKENIZER_DIR)
        facts.write(tmp)
        io_spec(tmp).write(tmp)
        write_export_manifest(tmp, ExportManifest(
            format="onnx", head=head, precision=precision, opset=opset, task=task,
            source_run=relative_path(run_folder.path, destination), source_task_sha256=file_hashes(task_dir),
            backbone=materialized.manifest.backbone))
    return destination


def write_graphs(model: T5ForConditionalGeneration, label_ids: torch.Tensor | None, head: str, precision: str,
                 opset: int, folder: Path, store_once: bool = True, generate_graph: bool = False) -> None:
    """The graphs of `head` of a folded T5 (cast to `precision` in place) into `folder`; `label_ids` [K, L]
    for the classify head. `store_once`: one decoder graph, each weight stored once (`finish_graphs`);
    else optimum's three generate graphs, each with its own weights."""
    from hyperexport.export.classify import export_classify_graph
    from hyperexport.export.generate import export_generate_graphs
    from hyperexport.export.precision import cast_to_precision
    from hyperexport.export.quantize import quantize_folder

    cast_to_precision(model, precision)
    if head in ("generate", "both"):
        export_generate_graphs(model, folder, opset)
    if head in ("classify", "both"):
        assert label_ids is not None
        export_classify_graph(model, label_ids, folder / CLASSIFY_GRAPH, opset)
    if store_once:
        finish_graphs(folder, precision, generate_graph)
    elif precision == "int8":
        quantize_folder(folder)


def check_options(head: str, precision: str) -> None:
    if head not in HEADS:
        raise UserError(f"unknown head '{head}': use generate, classify or both")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}': use {', '.join(PRECISIONS)}")


def check_generate_graph(head: str, precision: str, generate_graph: bool, store_once: bool) -> None:
    if generate_graph and (head == "classify" or not store_once):
        raise UserError("--generate-graph needs the generate head (--head generate or both) of an ONNX export")
    if generate_graph and precision == "bf16":
        raise UserError("--generate-graph needs fp32, fp16 or int8 graphs: ONNX Runtime's BeamSearch takes no bf16")


def refuse_existing(destination: Path, overwrite: bool) -> None:
    if destination.exists() and not overwrite:
        raise UserError(f"{destination} already exists: pass --overwrite to replace it, or choose another --output")


def check_tokenizer(run_folder: RunFolder, head: str) -> None:
    """Only the generate head can do without a tokenizer (an imported run may have none)."""
    if run_folder.tokenizer_dir is None and head != "generate":
        raise UserError(f"the {head} head needs the run's tokenizer and {run_folder.path} has none: export --head "
                        "generate, or import the checkpoint again with --tokenizer")


def run_tokenizer(run_folder: RunFolder) -> PreTrainedTokenizerBase | None:
    """The run's tokenizer, or None for an imported run without one."""
    from hyperexport.model.build import load_tokenizer

    return load_tokenizer(str(run_folder.tokenizer_dir)) if run_folder.tokenizer_dir else None


def finish_graphs(folder: Path, precision: str, generate_graph: bool = False,
                  quantize: Callable[[Path], None] | None = None) -> None:
    """The post-process of a folder of optimum's graphs (a per-task or a multi-task export): one decoder
    for every step, int8 quantization (`quantize`, default `quantize_folder`), the optional one-graph
    generator, each weight stored once."""
    from hyperexport.export.one_decoder import one_decoder
    from hyperexport.export.quantize import quantize_folder
    from hyperexport.export.search import add_generate_graph
    from hyperexport.export.tied_embedding import tie_embedding
    from hyperexport.export.weights import store_weights_once

    one_decoder(folder)
    tie_embedding(folder)
    if precision == "int8":
        (quantize or quantize_folder)(folder)
    if generate_graph:
        add_generate_graph(folder)
    store_weights_once(folder)


def io_spec(folder: Path) -> IoSpec:
    """Names, element types and shapes (symbolic axes by name) of every graph's inputs and outputs."""
    import onnx

    def describe(values) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(name=v.name, dtype=onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower(),
                                shape=tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim))
                     for v in values)

    graphs = {}
    for path in sorted(folder.glob("*.onnx")):
        graph = onnx.load(str(path), load_external_data=False).graph
        graphs[path.name] = GraphIo(inputs=describe(graph.input), outputs=describe(graph.output))
    return IoSpec(graphs)
