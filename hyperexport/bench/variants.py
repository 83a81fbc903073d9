"""The in-process variants `bench` times: what each runs, built once per run.

- `torch_hypernet`: the PyTorch HyperFormer++ model (adapter weights generated in every call), the seed's
  runtime; `torch_folded`: PyTorch on the folded model. Both run in this process, whose OpenMP wait
  policy is reported (the CLI sets PASSIVE, which slows PyTorch eager; `bench --peers` also times
  PyTorch in a process at its default, `bench.peers`).
- `ort_fp32`, `ort_int8`: ONNX Runtime on the folded model's export, made as `export` makes it
  (`export.onnx.finish_graphs`: one decoder, each weight once, int8 embeddings); the generate head runs
  the one greedy loop, past keys/values kept as OrtValues, every decode step timed (`bench.decode`).
- `ort_plain_backbone`, `ort_int8_plain_backbone`: the same without adapters (the floor).
- `ort_fp32_generate_graph`, `ort_int8_generate_graph`: `generate_model.onnx`, the loop in one call;
  `ort_int8_numpy_past`: the int8 loop with its past through numpy every step (what keeping it saves).
ONNX Runtime's pool threads do not spin (letting them spin made every ONNX Runtime variant 3-5x slower
on this shared 2-core machine).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hyperexport.bench.decode import StepTimer
from hyperexport.bench.subject import Subject
from hyperexport.contracts.export import GenerationIds
from hyperexport.contracts.names import CLASSIFY_GRAPH, GENERATE_MODEL_GRAPH
from hyperexport.runtime.backends import GraphBackend, OnnxRuntimeBackend
from hyperexport.runtime.generation import greedy_generate, one_graph_generate

if TYPE_CHECKING:
    from transformers import T5ForConditionalGeneration

TORCH_VARIANTS = ("torch_hypernet", "torch_folded")
# ONNX Runtime variant -> (source model, precision)
ORT_VARIANTS = {"ort_fp32": ("folded", "fp32"), "ort_int8": ("folded", "int8"),
                "ort_plain_backbone": ("plain", "fp32"), "ort_int8_plain_backbone": ("plain", "int8")}
GENERATE_GRAPH_VARIANTS = {"ort_fp32_generate_graph": "ort_fp32", "ort_int8_generate_graph": "ort_int8"}
VARIANTS = (*TORCH_VARIANTS, *ORT_VARIANTS)
NUMPY_PAST = "ort_int8_numpy_past"
GENERATE_ONLY = (*GENERATE_GRAPH_VARIANTS, NUMPY_PAST)


@dataclass
class Variants:
    fns: dict[str, dict[str, Callable]] = field(default_factory=dict)  # head -> variant -> fn(ids, mask)
    folders: dict[tuple[str, str], Path] = field(default_factory=dict)  # (head, ORT variant) -> its export folder
    timers: dict[str, StepTimer] = field(default_factory=dict)  # generate ORT variant -> its decode steps
    models: dict[str, T5ForConditionalGeneration] = field(default_factory=dict)  # "folded", "plain"
    settings: dict[str, dict] = field(default_factory=dict)  # variant -> how it runs


def build_variants(subject: Subject, heads: tuple[str, ...], folder: Path, threads: int,
                   progress_bar: bool) -> Variants:
    """Every in-process variant of every head, its export folder and its settings."""
    from tqdm.auto import tqdm

    from hyperexport.fold import fold_task
    from hyperexport.materialize import task_tensors
    from hyperexport.model.build import load_backbone

    def fresh():  # the model's backbone weights, without its hooks
        return load_backbone(subject.recipe.backbone, subject.recipe.train.seed, subject.backbone_dir).eval()

    built = Variants(models={"folded": fold_task(fresh(), task_tensors(subject.model, subject.task),
                                                 subject.recipe.model.activation), "plain": fresh()})
    steps = [(head, source) for head in heads for source in built.models]
    for head, source in tqdm(steps, desc="export", disable=not progress_bar):
        _export(built, subject, head, source, folder)
    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    for head in heads:
        built.fns[head] = {"torch_hypernet": torch_fn(subject, head, hypernet=True),
                           "torch_folded": torch_fn(subject, head, model=built.models["folded"])}
        built.settings.update({v: {"runtime": "pytorch eager, this process", "threads": threads,
                                   "omp_wait_policy": policy} for v in TORCH_VARIANTS})
        ort = {"runtime": "onnxruntime", "threads": threads, "spinning": False}
        for variant in ORT_VARIANTS:
            backend: GraphBackend = OnnxRuntimeBackend(built.folders[(head, variant)], threads=threads)
            if head == "generate":
                backend = built.timers.setdefault(variant, StepTimer(backend))
            built.fns[head][variant] = backend_fn(backend, head, subject.new_tokens, _ids(built, head, variant))
            built.settings[variant] = {**ort, "loop": "python, past kept as OrtValues"}
        if head == "generate":
            _generate_only(built, subject, threads)
            built.settings.update({NUMPY_PAST: {**ort, "loop": "python, past through numpy every step"},
                                   **{v: {**ort, "loop": GENERATE_MODEL_GRAPH} for v in GENERATE_GRAPH_VARIANTS}})
    return built


def _generate_only(built: Variants, subject: Subject, threads: int) -> None:
    """The one-graph generators, and the int8 loop with its past going through numpy (what keeping it saves)."""
    for variant, loop in GENERATE_GRAPH_VARIANTS.items():
        backend: GraphBackend = OnnxRuntimeBackend(built.folders[("generate", loop)], threads=threads)
        built.fns["generate"][variant] = graph_fn(backend, subject.new_tokens,
                                                  GenerationIds.read(built.folders[("generate", loop)]))
    backend = NumpyPast(OnnxRuntimeBackend(built.folders[("generate", "ort_int8")], threads=threads))
    built.fns["generate"][NUMPY_PAST] = backend_fn(backend, "generate", subject.new_tokens,
                                                   _ids(built, "generate", "ort_int8"))


class NumpyPast:
    """A backend without `infer_keeping`: every step's past keys/values come back as numpy arrays."""

    def __init__(self, backend: GraphBackend):
        self.backend, self.max_batch = backend, backend.max_batch

    def __enter__(self) -> NumpyPast:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def has(self, graph: str) -> bool:
        return self.backend.has(graph)

    def infer(self, graph: str, feeds):
        return self.backend.infer(graph, feeds)


def _export(built: Variants, subject: Subject, head: str, source: str, folder: Path) -> None:
    """The `source` model's graphs of `head` for fp32 and int8, finished as `export` finishes them."""
    import shutil

    from hyperexport.export.classify import export_classify_graph
    from hyperexport.export.generate import export_generate_graphs
    from hyperexport.export.onnx import finish_graphs

    raw = folder / f"{head}-{source}-raw"
    raw.mkdir()
    if head == "classify":
        export_classify_graph(built.models[source], subject.label_ids, raw / CLASSIFY_GRAPH)
    else:  # optimum's export leaves the model it traced changed (its encoder set up as a decoder)
        export_generate_graphs(copy.deepcopy(built.models[source]), raw)
    for variant, (from_model, precision) in ORT_VARIANTS.items():
        if from_model == source:
            target = folder / f"{head}-{variant}"
            shutil.copytree(raw, target)
            finish_graphs(target, precision, generate_graph=head == "generate" and source == "folded")
            built.folders[(head, variant)] = target
    shutil.rmtree(raw)


def _ids(built: Variants, head: str, variant: str) -> GenerationIds | None:
    return GenerationIds.read(built.folders[(head, variant)]) if head == "generate" else None


def torch_fn(subject: Subject, head: str, hypernet: bool = False, model=None) -> Callable:
    from hyperexport.export.classify import LabelScorer

    hyper = subject.model
    backbone = hyper.backbone if hypernet else model
    task_ids = lambda batch: torch.full((batch,), hyper.task_id(subject.task))  # noqa: E731
    scorer = LabelScorer(backbone, subject.label_ids).eval()

    @torch.no_grad()
    def classify(input_ids, attention_mask):
        if not hypernet:
            return scorer(input_ids, attention_mask)
        with hyper.adapting(task_ids(input_ids.shape[0])):  # adapter weights generated for this call
            return scorer(input_ids, attention_mask)

    @torch.no_grad()
    def generate(input_ids, attention_mask):
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, do_sample=False, num_beams=1,
                      max_new_tokens=subject.new_tokens, min_new_tokens=subject.new_tokens)
        if hypernet:
            return hyper.generate(task_ids(input_ids.shape[0]), **kwargs)
        return model.generate(**kwargs)

    return classify if head == "classify" else generate


def backend_fn(backend: GraphBackend, head: str, new_tokens: int, ids: GenerationIds | None) -> Callable:
    """fn(input_ids, attention_mask) over `backend`: label scores, or exactly `new_tokens` greedy tokens."""
    if head == "classify":
        return lambda input_ids, attention_mask: backend.infer(
            CLASSIFY_GRAPH, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})["scores"]
    assert ids is not None
    return lambda input_ids, attention_mask: greedy_generate(
        backend, input_ids.numpy(), attention_mask.numpy(), new_tokens, ids, min_new_tokens=new_tokens)


def graph_fn(backend: GraphBackend, new_tokens: int, ids: GenerationIds) -> Callable:
    """fn(input_ids, attention_mask): exactly `new_tokens` tokens from `generate_model.onnx`."""
    return lambda input_ids, attention_mask: one_graph_generate(
        backend, input_ids.numpy(), attention_mask.numpy(), new_tokens, ids, min_new_tokens=new_tokens)
