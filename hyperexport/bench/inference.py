"""`bench`: the variants of one task side by side, on the same inputs, in the same rotated rounds.

Variants (`bench.variants`): PyTorch (the hypernetwork model, the seed's runtime; the folded model),
ONNX Runtime fp32 and int8 exports of the folded model and of the plain backbone (the floor), and the
one-graph generator; with `peers`, PyTorch eager and CTranslate2 in a process of their own, each at its
best setting (`bench.peers`). Heads: classify (examples/s) and generate (greedy decoding of exactly
`new_tokens` tokens: tokens/s). Each round times every variant once, in an order rotated per round,
after a short pause that lets the previous runtime's threads go idle, so that machine drift hits all
alike. Ratios are speed-ups (p50 of the slower over the faster: > 1 means the first-named is faster).
The report also holds every decode step against the memory bound (`bench.decode`, `bench.bandwidth`),
export sizes against the bytes of their weights, resident memory (`bench.memory`), whether the runtimes
agree (`bench.agreement`) and the issue's goals (`bench.goals`). With `backbone`, the shape of that
preset is built with random weights (the figures then hold for real model sizes; accuracy does not apply).
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyperexport.bench.peers import SelfTimed
from hyperexport.bench.subject import (
    Subject,
    adapter_bottleneck,
    check_settings,
    load_subject,
    machine_facts,
    random_inputs,
    torch_threads,
)
from hyperexport.bench.variants import (
    GENERATE_GRAPH_VARIANTS,
    NUMPY_PAST,
    ORT_VARIANTS,
    VARIANTS,
    Variants,
    build_variants,
)
from hyperexport.contracts.export import ExportFolder
from hyperexport.contracts.names import DECODER_WITH_PAST_GRAPH, HEAD_GRAPHS
from hyperexport.errors import UserError
from hyperexport.options import DEFAULT_BENCH_ROUNDS, DEFAULT_BENCH_SEQ
from hyperexport.runtime.backends import GraphBackend

HEADS = ("classify", "generate")
TENSORRT_VARIANT = "tensorrt"  # + _<precision>: an engine folder given with --tensorrt (GPU)
SETTLE_S = 0.01  # idle pause before each timed call: OpenMP threads of the previous runtime stop spinning
# ratio name -> (numerator variant, denominator variant): p50 of the first over p50 of the second
RATIOS = {"ort_fp32_vs_torch_hypernet": ("torch_hypernet", "ort_fp32"),
          "ort_int8_vs_torch_hypernet": ("torch_hypernet", "ort_int8"),
          "ort_fp32_vs_plain_backbone": ("ort_plain_backbone", "ort_fp32"),
          "ort_int8_vs_int8_plain_backbone": ("ort_int8_plain_backbone", "ort_int8"),
          "ort_int8_vs_ort_fp32": ("ort_fp32", "ort_int8"),
          **{f"{graph}_vs_loop": (loop, graph) for graph, loop in GENERATE_GRAPH_VARIANTS.items()},
          "kept_past_vs_numpy_past": (NUMPY_PAST, "ort_int8")}


def bench(run: str | Path | None = None, *, task: str, backbone: str | None = None, recipe: str | Path | None = None,
          batches: tuple[int, ...] = (1, 8, 32), seq: int = DEFAULT_BENCH_SEQ, heads: tuple[str, ...] = HEADS,
          rounds: int = DEFAULT_BENCH_ROUNDS, threads: int | None = None, progress_bar: bool = True,
          tensorrt: str | Path | None = None, peers: bool = False, memory: bool = True,
          new_tokens: int | None = None) -> dict:
    """Latency, throughput, sizes, decode steps, agreement, ratios and goals of every variant at every
    batch size (see module doc); `tensorrt`: also an engine folder of the task (an NVIDIA GPU); `peers`:
    also PyTorch eager and CTranslate2 (`pip install -e '.[peers]'`); `memory`: resident memory of the
    generate exports, each in a fresh process; `new_tokens`: generate exactly that many tokens (default: the
    task's label length)."""
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        raise UserError(f"unknown head '{unknown[0]}': use {' or '.join(HEADS)}")
    check_settings(seq, rounds)
    if peers:
        from hyperexport.bench.peers import require_ctranslate2

        require_ctranslate2()
        if "generate" not in heads:
            raise UserError("--peers compares generation: add the generate head (--head generate)")
    engines = _tensorrt_export(tensorrt, task) if tensorrt is not None else None
    subject = load_subject(run, task, backbone, recipe)
    if new_tokens is not None:
        subject = replace(subject, new_tokens=new_tokens)
    with torch_threads(threads) as threads, tempfile.TemporaryDirectory(prefix="hyperexport-bench-") as folder, \
            contextlib.ExitStack() as stack:
        built = build_variants(subject, heads, Path(folder), threads, progress_bar)
        sizes = _sizes(subject, built, heads)
        if engines is not None:
            _add_tensorrt(built, sizes, engines, stack, subject)
        worker = _peers(stack, subject, built, Path(folder), threads, (run, task, backbone, recipe)) if peers else None
        rows, steps = _measure(subject, built, batches, seq, rounds, progress_bar)
        report: dict[str, Any] = {
            "machine": machine_facts(threads), "source": subject.source, "task": subject.task,
            "backbone": subject.recipe.backbone.config, "tokenizer": subject.recipe.backbone.tokenizer,
            "adapter_bottleneck": adapter_bottleneck(subject), "seq": seq, "batches": list(batches),
            "rounds": rounds, "new_tokens": subject.new_tokens, "settings": built.settings, "results": rows,
            "sizes_mb": sizes, "export_sizes": _export_sizes(built), "hypernet_ms": _hypernet_ms(subject)}
        if "generate" in heads:
            report.update(_generate_facts(subject, built, steps, seq, threads, worker, memory))
        if worker is not None:
            from hyperexport.bench.peers import best_settings

            report["peers"] = {"sizes_mb": worker.sizes_mb, "best": best_settings(rows)}
    report.update(peak_rss_mb=_peak_rss_mb(), ratios=ratios(rows))
    report["machine"]["load_average_1m_end"] = os.getloadavg()[0]
    from hyperexport.bench.goals import goals

    report["goals"] = goals(report)
    return report


def _peers(stack: contextlib.ExitStack, subject: Subject, built: Variants, folder: Path, threads: int, args: tuple):
    from hyperexport.bench.peers import PeerWorker, peer_settings

    run, task, backbone, recipe = args
    subject_args = {"run": str(run) if run is not None else None, "task": task, "backbone": backbone,
                    "recipe_path": str(recipe) if recipe is not None else None}
    worker = stack.enter_context(PeerWorker(subject, built.models["plain"], folder / "peers", threads, subject_args))
    built.fns["generate"].update(worker.variants())
    built.settings.update({k: v for k, v in peer_settings(threads).items() if k in worker.names})
    return worker


def _generate_facts(subject: Subject, built: Variants, steps: dict, seq: int, threads: int, worker,
                    memory: bool) -> dict:
    """Decode steps against the bound, resident memory and agreement."""
    from hyperexport.bench.agreement import agreement
    from hyperexport.bench.bandwidth import read_bandwidth
    from hyperexport.bench.memory import resident_mb

    bandwidth = {"threads": read_bandwidth(threads), "one_thread": read_bandwidth(1)}
    facts = {"bandwidth_gb_s": {k: v / 1e9 for k, v in bandwidth.items()},
             "decode_steps": _decode_rows(subject, built, steps, seq, bandwidth["threads"]),
             "agreement": agreement(subject, built, worker)}
    if memory:
        facts["resident"] = {v: resident_mb(built.folders[("generate", v)], threads, subject.new_tokens)
                             for v in ("ort_fp32", "ort_int8")}
    return facts


# ---- engines (a GPU) ------------------------------------------------------------------------------
def _tensorrt_export(folder: str | Path, task: str) -> tuple[ExportFolder, GraphBackend]:
    """An engine folder of `task` and its backend; before the slow part, so that no GPU, no tensorrt or
    plans from another machine are a one-line error at once."""
    from hyperexport.runtime.tensorrt import TensorRTBackend, open_engine_folder

    export = open_engine_folder(Path(folder))
    if export.manifest.task != task:
        raise UserError(f"{folder} holds engines of task {export.manifest.task}, not {task}")
    return export, TensorRTBackend(export.path)


def _add_tensorrt(built: Variants, sizes: dict, engines: tuple[ExportFolder, GraphBackend],
                  stack: contextlib.ExitStack, subject: Subject) -> None:
    """The engines as variant `tensorrt_<precision>` of every head they hold, and their plans' sizes."""
    from hyperexport.bench.variants import backend_fn

    export, backend = engines
    stack.enter_context(backend)
    name = f"{TENSORRT_VARIANT}_{export.manifest.precision}"
    ids = export.generation_ids if "generate" in export.heads else None
    for head in export.heads:
        if head in built.fns:
            built.fns[head][name] = backend_fn(backend, head, subject.new_tokens, ids)
            graph_bytes = sum(export.graph_file(g).stat().st_size for g in HEAD_GRAPHS[head])
            sizes.setdefault(name, {})[head] = graph_bytes / 2**20


# ---- measuring ------------------------------------------------------------------------------------
def _measure(subject: Subject, built: Variants, batches: tuple[int, ...], seq: int, rounds: int,
             progress_bar: bool) -> tuple[list[dict], dict]:
    """The result rows, and {(variant, batch): decode-step seconds} of the timed generate rounds."""
    from tqdm.auto import tqdm

    rows, steps = [], {}
    work = [(batch, head) for batch in batches for head in built.fns]
    for batch, head in tqdm(work, desc="bench", disable=not progress_bar):
        input_ids, attention_mask = random_inputs(subject, batch, seq)
        timers = built.timers if head == "generate" else {}
        timings = time_rounds(built.fns[head], input_ids, attention_mask, rounds,
                               after_warmup=functools.partial(_clear_timers, timers))
        steps.update({(variant, batch): list(timer.seconds) for variant, timer in timers.items()})
        for variant, seconds in timings.items():
            p50, p90 = (float(np.percentile(seconds, q)) for q in (50, 90))
            items = batch * (subject.new_tokens if head == "generate" else 1)
            rows.append({"head": head, "batch": batch, "variant": variant, "p50_ms": 1e3 * p50, "p90_ms": 1e3 * p90,
                         "throughput": items / p50, "unit": "tokens/s" if head == "generate" else "examples/s"})
    return rows, steps


def _clear_timers(timers: dict) -> None:
    for timer in timers.values():
        timer.seconds.clear()


def time_rounds(fns: dict[str, Callable], input_ids, attention_mask, rounds: int,
                 after_warmup: Callable[[], object] = lambda: None) -> dict[str, list[float]]:
    """One warm-up call each, then `rounds` rounds timing every variant once, in rotated order. A variant
    run elsewhere returns its own duration (`peers.SelfTimed`: timed where it ran, not across the pipe)."""
    names = list(fns)
    for name in names:
        fns[name](input_ids, attention_mask)
    after_warmup()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            result = fns[name](input_ids, attention_mask)
            elapsed = time.perf_counter() - start
            seconds[name].append(result.seconds if isinstance(result, SelfTimed) else elapsed)
    return seconds


def ratios(rows: list[dict]) -> dict:
    """Speed-ups per head and batch from the result rows (> 1: the first-named variant is faster); a
    ratio lists the batches where both of its variants ran."""
    p50 = {(r["head"], r["batch"], r["variant"]): r["p50_ms"] for r in rows}
    heads = sorted({r["head"] for r in rows})
    batches = sorted({r["batch"] for r in rows})

    def speedup(slow: str, fast: str) -> dict:
        return {head: {str(b): p50[(head, b, slow)] / p50[(head, b, fast)] for b in batches
                       if (head, b, slow) in p50 and (head, b, fast) in p50} for head in heads}

    out = {name: speedup(slow, fast) for name, (slow, fast) in RATIOS.items()}
    for variant in sorted({r["variant"] for r in rows if r["variant"].startswith(TENSORRT_VARIANT)}):
        out[f"{variant}_vs_ort_fp32"] = speedup("ort_fp32", variant)
    if set(heads) == set(HEADS):  # a label from one classify pass against one from the generate loop
        out["classify_vs_generate"] = {str(b): p50[("generate", b, "ort_fp32")] / p50[("classify", b, "ort_fp32")]
                                       for b in batches}
    return out


# ---- facts about the run --------------------------------------------------------------------------
def _decode_rows(subject: Subject, built: Variants, steps: dict, seq: int, bandwidth: float) -> list[dict]:
    """Each ONNX Runtime generate variant's decode step (p50 of the steps of its timed rounds) against the
    time its bytes take at the measured bandwidth."""
    from hyperexport.bench.bandwidth import bound_ms
    from hyperexport.bench.decode import step_bytes

    config = subject.model.backbone.config
    rows = []
    for (variant, batch), seconds in sorted(steps.items()):
        graph = built.folders[("generate", variant)] / DECODER_WITH_PAST_GRAPH
        nbytes = step_bytes(graph, batch, seq, (subject.new_tokens - 1) / 2, config.num_decoder_layers,
                            config.num_heads, config.d_kv)
        step = 1e3 * float(np.percentile(seconds, 50))
        bound = bound_ms(nbytes, bandwidth)
        rows.append({"variant": variant, "batch": batch, "step_p50_ms": step, "step_bytes_mb": nbytes / 2**20,
                     "bound_ms": bound, "vs_bound": step / bound})
    return rows


def _sizes(subject: Subject, built: Variants, heads: tuple[str, ...]) -> dict:
    return {"torch_hypernet": _parameter_mb(subject.model), "torch_folded": _parameter_mb(built.models["folded"]),
            **{v: {head: folder_mb(built.folders[(head, v)]) for head in heads} for v in ORT_VARIANTS}}


def _export_sizes(built: Variants) -> dict:
    """{variant: {head: {"files_mb", "weights_mb"}}}: the folder's graphs and weights file against the
    bytes of the distinct weights they hold."""
    from hyperexport.export.weights import weight_bytes

    out: dict[str, dict] = {}
    for (head, variant), folder in built.folders.items():
        out.setdefault(variant, {})[head] = {"files_mb": folder_mb(folder), "weights_mb": weight_bytes(folder) / 2**20}
    return out


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
    return sum(p.stat().st_size for p in folder.iterdir() if ".onnx" in p.name) / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


__all__ = ["HEADS", "RATIOS", "VARIANTS", "bench", "ratios"]
