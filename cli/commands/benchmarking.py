"""`bench`: the variants of one task side by side (latency, throughput, sizes, ratios), or training steps/s."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hyperexport.options import DEFAULT_BENCH_BATCHES, DEFAULT_BENCH_ROUNDS, DEFAULT_BENCH_SEQ
from hyperexport_cli.app import JsonOpt, RunOpt, app
from hyperexport_cli.errors import user_errors
from hyperexport_cli.output import print_bench, print_json


@app.command(epilog="Example: hyperexport bench --task rte --backbone t5-small --batch 1,8 --json  |  "
                     "hyperexport bench --task rte --backbone t5-small --batch 1,8 --head generate --peers --json  |  "
                     "hyperexport bench --task rte --train --backbone t5-small  |  "
                     "hyperexport bench --task rte --backbone t5-small --multitask 8 --threads 2")
@user_errors
def bench(
    task: Annotated[str, typer.Option(help="The task to benchmark.")],
    run: RunOpt = None,
    backbone: Annotated[str | None, typer.Option(
        help="Build this backbone preset's shape with random weights (t5-small, t5-base): real model sizes, "
             "no download.")] = None,
    recipe: Annotated[Path | None, typer.Option(
        help="With --backbone: the recipe whose tasks and adapter settings to use (default: the run's, "
             "else the embedded demo recipe).")] = None,
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = DEFAULT_BENCH_BATCHES,
    seq: Annotated[int, typer.Option(min=2, help="Input length in tokens.")] = DEFAULT_BENCH_SEQ,
    head: Annotated[str, typer.Option(help="classify, generate, or classify,generate.")] = "classify,generate",
    rounds: Annotated[int, typer.Option(min=1, help="Timed calls per variant, batch and head.")] = DEFAULT_BENCH_ROUNDS,
    threads: Annotated[int | None, typer.Option(
        min=1, help="CPU threads for PyTorch and ONNX Runtime (default: all).")] = None,
    train: Annotated[bool, typer.Option("--train", help="Instead: training steps/s of HyperFormer++ against "
                                                         "plain adapters on the same batches.")] = False,
    multitask: Annotated[int | None, typer.Option(
        help="Instead: a multi-task export of N tasks against the task's single-task export (same-task and "
             "mixed batches, disk, memory).")] = None,
    tensorrt: Annotated[Path | None, typer.Option(
        help="Also this TensorRT engine folder of the task (export --format tensorrt; NVIDIA GPU).")] = None,
    peers: Annotated[bool, typer.Option(
        "--peers", help="Also PyTorch eager and CTranslate2 int8/fp32 on the same weights, each at its best setting "
                        "(pip install -e '.[peers]').")] = False,
    memory: Annotated[bool, typer.Option(
        help="Measure the generate exports' resident memory (a fresh process each).")] = True,
    new_tokens: Annotated[int | None, typer.Option(
        min=1, help="Generate exactly N tokens per example (default: the task's label length).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Latency (p50/p90), throughput, sizes and speed-up ratios of the PyTorch hypernetwork model, the
    folded model, ONNX Runtime fp32/int8, the plain backbone and (--peers) PyTorch eager and CTranslate2,
    measured side by side; decode steps against the memory bound; the issue's goals."""
    from hyperexport.bench.inference import bench as run_bench
    from hyperexport.bench.subject import parse_sizes
    from hyperexport.bench.training import bench_training

    batches = parse_sizes(batch, "batch")
    if multitask is not None:
        from hyperexport.bench.multitask import bench_multitask

        report = bench_multitask(run, task, backbone, recipe, multitask, batches, seq, tuple(head.split(",")), rounds,
                                 threads, progress_bar=not json_output)
    elif train:
        report = bench_training(run, task=task, backbone=backbone, recipe=recipe, batch=batches[0], seq=seq,
                                rounds=rounds, threads=threads, progress_bar=not json_output)
    else:
        report = run_bench(run, task=task, backbone=backbone, recipe=recipe, batches=batches, seq=seq,
                           heads=tuple(head.split(",")), rounds=rounds, threads=threads,
                           progress_bar=not json_output, tensorrt=tensorrt, peers=peers, memory=memory,
                           new_tokens=new_tokens)
    print_json(report) if json_output else print_bench(report)
