"""`bench`: the variants of one task side by side in one process, on the same inputs.

Variants (`VARIANTS`): the PyTorch hypernetwork model (adapter weights generated in every call),
the PyTorch folded model, ONNX Runtime fp32 and int8 exports of the folded model, and ONNX Runtime on
the plain backbone without adapters (the floor). Heads: classify (the label scorer: examples/s) and
generate (greedy decoding of exactly `new_tokens` tokens: tokens/s). Each round times every variant
once, in an order rotated per round, so that machine drift hits them alike. Ratios are speed-ups
(p50 latency of the slower form over the faster one's: > 1 means the first-named variant is faster).
With `backbone`, the shape of that preset is built with random weights (the figures then hold for
real model sizes; accuracy does not apply).
"""

from __future__ import annotations

import contextlib
import copy
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from hyperexport.bench.subject import (
    Subject,
    adapter_bottleneck,
    check_settings,
    load_subject,
    machine_facts,
    random_inputs,
    torch_threads,
)
from hyperexport.contracts.export import ExportFolder, GenerationIds
from hyperexport.contracts.names import CLASSIFY_GRAPH, HEAD_GRAPHS
from hyperexport.errors import UserError
from hyperexport.options import DEFAULT_BENCH_ROUNDS, DEFAULT_BENCH_SEQ
from hyperexport.runtime.backends import GraphBackend, OnnxRuntimeBackend
from hyperexport.runtime.generation import greedy_generate

VARIANTS = ("torch_hypernet", "torch_folded", "ort_fp32", "ort_int8", "ort_plain_backbone")
HEADS = ("classify", "generate")
TENSORRT_VARIANT = "tensorrt"  # + _<precision>: an engine folder given with --tensorrt (GPU)
# ratio name -> (numerator variant, denominator variant): p50 of the first over p50 of the second
RATIOS = {"ort_fp32_vs_torch_hypernet": ("torch_hypernet", "ort_fp32"),
          "ort_fp32_vs_plain_backbone": ("ort_plain_backbone", "ort_fp32"),
          "ort_int8_vs_ort_fp32": ("ort_fp32", "ort_int8")}


def bench(run: str | Path | None = None, *, task: str, backbone: str | None = None, recipe: str | Path | None = None,
          batches: tuple[int, ...] = (1, 8, 32), seq: int = DEFAULT_BENCH_SEQ, heads: tuple[str, ...] = HEADS,
          rounds: int = DEFAULT_BENCH_ROUNDS, threads: int | None = None, progress_bar: bool = True,
          tensorrt: str | Path | None = None) -> dict:
    """Latency, throughput, sizes and ratios of every variant at every batch size (see module doc);
    `tensorrt`: also an engine folder of the task (`export --format tensorrt`, needs an NVIDIA GPU)."""
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        raise UserError(f"unknown head '{unknown[0]}': use {' or '.join(HEADS)}")
    check_settings(seq, rounds)
    engines = _tensorrt_export(tensorrt, task) if tensorrt is not None else None
    subject = load_subject(run, task, backbone, recipe)
    with torch_threads(threads) as threads, tempfile.TemporaryDirectory(prefix="hyperexport-bench-") as folder, \
            contextlib.ExitStack() as stack:
        variants, sizes = _build_variants(subject, heads, Path(folder), threads, progress_bar)
        if engines is not None:
            _add_tensorrt(variants, sizes, engines, stack, subject)
        rows = _measure(subject, variants, batches, seq, rounds, progress_bar)
        hypernet_ms = _hypernet_ms(subject)
    return {"machine": machine_facts(threads), "source": subject.source, "task": subject.task,
            "backbone": subject.recipe.backbone.config, "tokenizer": subject.recipe.backbone.tokenizer,
            "adapter_bottleneck": adapter_bottleneck(subject), "seq": seq, "batches": list(batches), "rounds": rounds,
            "new_tokens": subject.new_tokens, "results": rows, "sizes_mb": sizes,
            "hypernet_ms": hypernet_ms, "peak_rss_mb": _peak_rss_mb(), "ratios": ratios(rows)}


# ---- the variants ---------------------------------------------------------------------------------
def _build_variants(subject: Subject, heads: tuple[str, ...], folder: Path, threads: int,
                    progress_bar: bool) -> tuple[dict, dict]:
    """{head: {variant: fn(input_ids, attention_mask)}} and {variant: {head: size in MB}}."""
    from tqdm.auto import tqdm

    from hyperexport.export.classify import export_classify_graph
    from hyperexport.export.generate import export_generate_graphs
    from hyperexport.export.quantize import quantize_folder
    from hyperexport.fold import fold_task
    from hyperexport.materialize import task_tensors
    from hyperexport.model.build import load_backbone

    def fresh():  # the model's backbone weights, without its hooks
        return load_backbone(subject.recipe.backbone, subject.recipe.train.seed, subject.backbone_dir).eval()

    folded = fold_task(fresh(), task_tensors(subject.model, subject.task), subject.recipe.model.activation)
    sources = {"ort_fp32": folded, "ort_plain_backbone": fresh()}
    steps = [(head, variant, module) for head in heads for variant, module in sources.items()]
    graphs: dict[tuple[str, str], Path] = {}  # (head, variant) -> its graph folder
    for head, variant, module in tqdm(steps, desc="export", disable=not progress_bar):
        target = folder / f"{head}-{variant}"
        target.mkdir()
        if head == "classify":
            export_classify_graph(module, subject.label_ids, target / CLASSIFY_GRAPH)
        else:  # optimum's export leaves the model it traced changed (its encoder set up as a decoder)
            export_generate_graphs(copy.deepcopy(module), target)
        graphs[(head, variant)] = target
        if variant == "ort_fp32":
            int8 = folder / f"{head}-ort_int8"
            shutil.copytree(target, int8)
            quantize_folder(int8)
            graphs[(head, "ort_int8")] = int8
    onnx_variants = ("ort_fp32", "ort_int8", "ort_plain_backbone")
    variants = {head: {"torch_hypernet": _torch_fn(subject, head, hypernet=True),
                       "torch_folded": _torch_fn(subject, head, model=folded),
                       **{v: _onnxruntime_fn(graphs[(head, v)], head, subject.new_tokens, threads) for v in onnx_variants}}
                for head in heads}
    sizes = {"torch_hypernet": _parameter_mb(subject.model), "torch_folded": _parameter_mb(folded),
             **{v: {head: folder_mb(graphs[(head, v)]) for head in heads} for v in onnx_variants}}
    return variants, sizes


def _tensorrt_export(folder: str | Path, task: str) -> tuple[ExportFolder, GraphBackend]:
    """An engine folder of `task` and its backend; before the slow part, so that no GPU, no tensorrt or
    plans from another machine are a one-line error at once."""
    from hyperexport.runtime.tensorrt import TensorRTBackend, open_engine_folder

    export = open_engine_folder(Path(folder))
    if export.manifest.task != task:
        raise UserError(f"{folder} holds engines of task {export.manifest.task}, not {task}")
    return export, TensorRTBackend(export.path)


def _add_tensorrt(variants: dict, sizes: dict, engines: tuple[ExportFolder, GraphBackend],
                  stack: contextlib.ExitStack, subject: Subject) -> None:
    """The engines as variant `tensorrt_<precision>` of every head they hold, and their plans' sizes."""
    export, backend = engines
    stack.enter_context(backend)
    name = f"{TENSORRT_VARIANT}_{export.manifest.precision}"
    ids = export.generation_ids if "generate" in export.heads else None
    for head in export.heads:
        if head in variants:
            variants[head][name] = _backend_fn(backend, head, subject.new_tokens, ids)
            sizes.setdefault(name, {})[head] = sum(export.graph_file(g).stat().st_size for g in HEAD_GRAPHS[head]) / 2**20


def _torch_fn(subject: Subject, head: str, hypernet: bool = False, model=None) -> Callable:
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


def _onnxruntime_fn(folder: Path, head: str, new_tokens: int, threads: int) -> Callable:
    """ONNX Runtime over one variant's graphs, with `threads` intra-op threads that do not spin idle (several
    sessions share these cores; one session's spinning threads would slow whichever variant runs next)."""
    ids = GenerationIds.read(folder) if head == "generate" else None
    return _backend_fn(OnnxRuntimeBackend(folder, threads=threads), head, new_tokens, ids)


def _backend_fn(backend: GraphBackend, head: str, new_tokens: int, ids: GenerationIds | None) -> Callable:
    """fn(input_ids, attention_mask) over `backend`: label scores, or exactly `new_tokens` greedy tokens."""
    if head == "classify":
        return lambda input_ids, attention_mask: backend.infer(
            CLASSIFY_GRAPH, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})["scores"]
    assert ids is not None
    return lambda input_ids, attention_mask: greedy_generate(
        backend, input_ids.numpy(), attention_mask.numpy(), new_tokens, ids, min_new_tokens=new_tokens)


# ---- measuring ------------------------------------------------------------------------------------
def _measure(subject: Subject, variants: dict, batches: tuple[int, ...], seq: int, rounds: int,
             progress_bar: bool) -> list[dict]:
    from tqdm.auto import tqdm

    rows = []
    work = [(batch, head) for batch in batches for head in variants]
    for batch, head in tqdm(work, desc="bench", disable=not progress_bar):
        input_ids, attention_mask = random_inputs(subject, batch, seq)
        timings = time_rounds(variants[head], input_ids, attention_mask, rounds)
        for variant, seconds in timings.items():
            p50, p90 = (float(np.percentile(seconds, q)) for q in (50, 90))
            items = batch * (subject.new_tokens if head == "generate" else 1)
            rows.append({"head": head, "batch": batch, "variant": variant, "p50_ms": 1e3 * p50, "p90_ms": 1e3 * p90,
                         "throughput": items / p50, "unit": "tokens/s" if head == "generate" else "examples/s"})
    return rows


def time_rounds(fns: dict[str, Callable], input_ids, attention_mask, rounds: int) -> dict[str, list[float]]:
    """One warm-up call each, then `rounds` rounds timing every variant once, in rotated order."""
    names = list(fns)
    for name in names:
        fns[name](input_ids, attention_mask)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            fns[name](input_ids, attention_mask)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def ratios(rows: list[dict]) -> dict:
    """Speed-ups per head and batch from the result rows (> 1: the first-named variant is faster)."""
    p50 = {(r["head"], r["batch"], r["variant"]): r["p50_ms"] for r in rows}
    heads = sorted({r["head"] for r in rows})
    batches = sorted({r["batch"] for r in rows})
    out = {name: {head: {str(b): p50[(head, b, slow)] / p50[(head, b, fast)] for b in batches}
                  for head in heads} for name, (slow, fast) in RATIOS.items()}
    for variant in sorted({r["variant"] for r in rows if r["variant"].startswith(TENSORRT_VARIANT)}):
        out[f"{variant}_vs_ort_fp32"] = {head: {str(b): p50[(head, b, "ort_fp32")] / p50[(head, b, variant)]
                                                for b in batches if (head, b, variant) in p50} for head in heads}
    if set(heads) == set(HEADS):  # a label from one classify pass against one from the generate loop
        out["classify_vs_generate"] = {str(b): p50[("generate", b, "ort_fp32")] / p50[("classify", b, "ort_fp32")]
                                       for b in batches}
    return out


# ---- facts about the run --------------------------------------------------------------------------
@torch.no_grad()
def _hypernet_ms(subject: Subject, calls: int = 20) -> float:
    """One generation of every layer's adapter weights for one task (what each hypernet call adds)."""
    task_ids = torch.tensor([subject.model.task_id(subject.task)])
    subject.model.adapter_weights(task_ids)
    start = time.perf_counter()
    for _ in range(calls):
        subject.model.adapter_weights(task_ids)
    return 1e3 * (time.perf_counter() - start) / calls


def _parameter_mb(model: torch.nn.Module) -> float:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}.values()
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.onnx*")) / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


