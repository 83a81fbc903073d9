"""Load on `hyperexport serve`, next to in-process ONNX Runtime in the same run: throughput and p50/p95/p99
latency at each concurrency over HTTP and gRPC, every failed request counted, the batch sizes Triton
formed (its statistics extension), and a soak's resident memory.

    python benchmarks/serve_load.py --build demo --workdir /tmp/serve-bench        # the demo recipe, trained briefly
    python benchmarks/serve_load.py --build t5-small --workdir /tmp/serve-bench    # t5-small's shape, random weights
    python benchmarks/serve_load.py EXPORT [--concurrency 1,4,16,64] [--requests 2000] [--seconds 20]
                                    [--repeats 2] [--soak 20000] [--json out.json]
    python benchmarks/serve_load.py EXPORT --tasks rte,sst2                        # mixed-task traffic (multi-task)

A script, not `bench --serve`: `bench` measures variants of one task inside one process; this starts a
server (a child `hyperexport serve` on free ports of 127.0.0.1, the only address it sends to), drives
it from an asyncio client in this process, and builds and verifies the export it serves, which is
release work rather than a user's measurement. Every cell is bounded by a request count and a time.
The client shares the machine's cores with the server, so on a small machine the ratios include the
client's own cost. The in-process baseline is `predict`'s path (format, tokenize, ONNX Runtime, label)
at batch sizes 1, 4, 16 and 32, measured in this process right before each repeat's sweep (the server
idle); its best throughput and its batch-1 latency are what that repeat's cells are compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

from hyperexport.bench.serving import ServeProcess, batch_sizes, in_process, run_load, server_rss_mb, text_payloads

IN_PROCESS_BATCHES = (1, 4, 16, 32)
BUILD_STEPS = {"demo": 300, "t5-small": 1}  # the demo learns its tasks in a few hundred steps; t5-small: shape only


def build_export(kind: str, workdir: Path) -> Path:
    """Train (briefly), materialize rte, export both heads and verify: a folder `serve` accepts."""
    from hyperexport.export.onnx import export_onnx
    from hyperexport.materialize import materialize
    from hyperexport.recipe.load import load_recipe
    from hyperexport.recipe.schema import DEFAULT_RECIPE
    from hyperexport.training.loop import train
    from hyperexport.verify.parity import verify

    recipe = load_recipe(DEFAULT_RECIPE)
    if kind == "t5-small":  # random t5-small weights with the demo's adapters, tokenizer and data (bench --backbone)
        tasks = tuple(replace(task, max_eval_examples=32) for task in recipe.tasks)
        recipe = replace(recipe, name="t5-small", tasks=tasks,
                         backbone=replace(recipe.backbone, config="t5-small", pretrained=None))
    run = train(recipe, output=workdir / "runs" / kind, max_steps=BUILD_STEPS[kind], overwrite=True,
                progress_bar=False)
    materialize(run, tasks=["rte"], overwrite=True)
    export = export_onnx(run, task="rte", head="both", output=workdir / "exports" / kind / "rte", overwrite=True)
    report = verify(export, max_examples=32)
    if not report["passed"]:
        sys.exit(f"error: verify failed on {export}")
    return export


def examples_of(task: str, count: int) -> list[dict]:
    from hyperexport.data.demo import demo_examples

    return [{key: value for key, value in row.items() if key != "label"}
            for row in demo_examples(task, "validation", count, 0)]


def in_process_examples(tasks: list[str], multi_task: bool, count: int) -> list[dict]:
    """The examples in-process labelling is timed on: the same traffic as the server's (tasks interleaved,
    each row naming its task for a multi-task export)."""
    per_task = [[{**row, "task": task} if multi_task else row for row in examples_of(task, count // len(tasks))]
                for task in tasks]
    return [row for group in zip(*per_task) for row in group]


def payloads_for(tasks: list[str], multi_task: bool, count: int) -> list:
    """Requests of one example each; tasks interleaved for a multi-task export's mixed traffic."""
    per_task = [text_payloads([json.dumps(row) for row in examples_of(task, count)], task if multi_task else None)
                for task in tasks]
    return [payload for group in zip(*per_task) for payload in group]


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": version("onnxruntime"), "nvidia-pytriton": version("nvidia-pytriton"),
            "tritonclient": version("tritonclient"), "load_average_start": os.getloadavg()}


def sweep(server: ServeProcess, model: str, payloads: list, args, repeat: int) -> list[dict]:
    rows = []
    for protocol in ("http", "grpc"):
        for concurrency in args.concurrency:
            formed_before = batch_sizes(server.endpoints, model)
            result = run_load(server.endpoints, protocol, model, payloads, concurrency, args.requests,
                              args.seconds).summary()
            formed = _difference(batch_sizes(server.endpoints, model), formed_before)
            executions = sum(formed.values())
            rows.append({**result, "repeat": repeat, "batches_formed": formed,
                         "mean_batch": sum(size * n for size, n in formed.items()) / max(executions, 1),
                         "server_rss_mb": server_rss_mb(server.process.pid)})
            print(_line(rows[-1]), file=sys.stderr)
    return rows


def _difference(after: dict[int, int], before: dict[int, int]) -> dict[int, int]:
    return {size: count - before.get(size, 0) for size, count in sorted(after.items()) if count > before.get(size, 0)}


def _line(row: dict) -> str:
    return (f"{row['protocol']:>4} c={row['concurrency']:<3} {row['requests']:>6} requests, {row['failed']} failed, "
            f"{row['throughput_per_s']:8.1f}/s  p50 {row['p50_ms']:7.2f}  p95 {row['p95_ms']:7.2f}  "
            f"p99 {row['p99_ms']:7.2f} ms  mean batch {row['mean_batch']:.1f}")


def soak(server: ServeProcess, model: str, payloads: list, total: int) -> dict:
    """`total` requests, half over HTTP and half over gRPC at once (16 clients each); resident memory
    of the server's processes before and after."""
    before = server_rss_mb(server.process.pid)
    results: list = []
    threads = [threading.Thread(target=lambda p=protocol: results.append(
        run_load(server.endpoints, p, model, payloads, 16, total // 2, 3600))) for protocol in ("http", "grpc")]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = server_rss_mb(server.process.pid)
    return {"requests": sum(len(r.latencies_ms) for r in results), "failed": sum(r.failures for r in results),
            "seconds": round(time.perf_counter() - start, 1), "rss_mb_before": round(before, 1),
            "rss_mb_after": round(after, 1), "rss_growth_percent": round(100 * (after / before - 1), 2)}


def ratios(rows: list[dict], local: list[dict]) -> dict:
    """Per protocol and repeat, against the in-process figures measured just before that repeat:
    throughput at concurrency 16 over in-process at its best batch size, and p99 at concurrency 1 over
    the in-process batch-1 p99 (and p50)."""
    found = {}
    for row in rows:
        key, base = f"{row['protocol']}#{row['repeat']}", local[row["repeat"]]
        if row["concurrency"] == 16:
            found.setdefault(key, {})["throughput_c16_vs_in_process_best"] = round(
                row["throughput_per_s"] / base["best_throughput_per_s"], 3)
        if row["concurrency"] == 1:
            found.setdefault(key, {}).update({
                "p99_c1_vs_in_process_p99": round(row["p99_ms"] / base["batch1_p99_ms"], 3),
                "p99_c1_vs_in_process_p50": round(row["p99_ms"] / base["batch1_p50_ms"], 3)})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", nargs="?", type=Path, help="a verified export folder (or --build one)")
    parser.add_argument("--build", choices=sorted(BUILD_STEPS), help="build and verify an export to serve")
    parser.add_argument("--workdir", type=Path, default=Path("serve-bench"), help="where --build writes")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--requests", type=int, default=2000, help="at most this many requests per cell")
    parser.add_argument("--seconds", type=float, default=20.0, help="and at most this long per cell")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--soak", type=int, default=0, help="requests of a soak after the sweep (0: none)")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks to mix (a multi-task export)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    export = build_export(args.build, args.workdir) if args.build else args.export
    if export is None:
        sys.exit("error: pass an export folder or --build demo|t5-small")
    report = run(export, args)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def run(export: Path, args) -> dict:
    from hyperexport.contracts.export import ExportFolder
    from hyperexport.serve.interfaces import served_model_name
    from hyperexport.serve.tasks import ServedTasks

    folder = ExportFolder.open(export)
    table = ServedTasks.of(folder)
    tasks = args.tasks.split(",") if args.tasks else [table.names[0]]
    # MULTITASK (issue 13): a multi-task export serves its tasks as one model; --tasks mixes their traffic
    payloads = payloads_for(tasks, table.multi_task, 64)
    facts = machine()
    model = served_model_name(folder.manifest.task, "classify")  # serve's default name: the export's task
    local, rows = [], []
    with ServeProcess([export]) as server:
        for protocol in ("http", "grpc"):
            run_load(server.endpoints, protocol, model, payloads, 4, 200, 60)  # warm
        for repeat in range(args.repeats):  # in-process right before each sweep (the server idle): neighbours in time
            local.append(in_process(export, in_process_examples(tasks, table.multi_task, 256), IN_PROCESS_BATCHES, 200))
            print(f"in-process: {local[-1]}", file=sys.stderr)
            rows += sweep(server, model, payloads, args, repeat)
        soaked = soak(server, model, payloads, args.soak) if args.soak else None
        code, _, err = server.stop()
    facts["load_average_end"] = os.getloadavg()
    return {"machine": facts, "export": str(export), "model": model, "tasks": tasks, "in_process": local,
            "served": rows, "soak": soaked, "ratios": ratios(rows, local),
            "failed_total": sum(row["failed"] for row in rows) + (soaked["failed"] if soaked else 0),
            "serve_exit_code": code, "serve_stderr": err.strip()[-500:]}


if __name__ == "__main__":
    main()
