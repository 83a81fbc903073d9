"""Load on a served model, and what `benchmarks/serve_load.py` and the serve tests need around it.

- `ServeProcess`: `hyperexport serve` as a child process on free local ports, ready or refused.
- `run_load`: requests at a fixed concurrency over HTTP or gRPC (Triton's asyncio clients, one event
  loop), bounded by a count and a time; latency percentiles, throughput and every failed request.
- `server_rss_mb`, `batch_sizes`: the server's resident memory (tritonserver and its model processes)
  and the batch sizes Triton's dynamic batcher formed (its statistics extension).
Traffic goes only to the server the caller started on this machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hyperexport.contracts.export import ExportFolder
from hyperexport.serve.tritonserver import Endpoints, free_ports

PROTOCOLS = ("http", "grpc")
Payload = dict[str, np.ndarray]  # input name -> array with a batch axis


class ServeProcess:
    """`hyperexport serve EXPORTS... OPTIONS...` in a child process, on free ports of 127.0.0.1."""

    def __init__(self, exports: Sequence[str | Path], *options: str, endpoints: Endpoints | None = None):
        self.endpoints = endpoints or Endpoints("127.0.0.1", *free_ports(3))
        ports = ["--http-port", str(self.endpoints.http_port), "--grpc-port", str(self.endpoints.grpc_port),
                 "--metrics-port", str(self.endpoints.metrics_port)]
        self.command = [sys.executable, "-m", "hyperexport_cli", "serve", *map(str, exports), *ports, *options]
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 300) -> ServeProcess:
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(self.endpoints.ready_url, timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"serve did not become ready: {self.stop(signal.SIGKILL)}")

    def stop(self, signal_number: int = signal.SIGTERM, timeout: float = 120) -> tuple[int, str, str]:
        """Send the signal, wait; (exit code, stdout, stderr)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()


@dataclass
class LoadResult:
    protocol: str
    concurrency: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0
    first_failure: str | None = None

    def summary(self) -> dict:
        latencies = np.array(self.latencies_ms or [np.nan])
        p50, p95, p99 = (float(np.percentile(latencies, q)) for q in (50, 95, 99))
        return {"protocol": self.protocol, "concurrency": self.concurrency, "requests": len(self.latencies_ms),
                "failed": self.failures, "first_failure": self.first_failure, "seconds": round(self.seconds, 3),
                "throughput_per_s": len(self.latencies_ms) / self.seconds if self.seconds else 0.0,
                "p50_ms": p50, "p95_ms": p95, "p99_ms": p99}


def run_load(endpoints: Endpoints, protocol: str, model: str, payloads: Sequence[Payload], concurrency: int,
             max_requests: int, max_seconds: float) -> LoadResult:
    """`concurrency` clients send `payloads` (in turn) to `model` until `max_requests` are sent or
    `max_seconds` have passed; each request's latency and every failure are kept."""
    return asyncio.run(_load(endpoints, protocol, model, payloads, concurrency, max_requests, max_seconds))


async def _load(endpoints: Endpoints, protocol: str, model: str, payloads: Sequence[Payload], concurrency: int,
                max_requests: int, max_seconds: float) -> LoadResult:
    if protocol == "http":
        import tritonclient.http.aio as aio

        client = aio.InferenceServerClient(endpoints.http, conn_limit=max(concurrency, 1))
    else:
        import tritonclient.grpc.aio as aio

        client = aio.InferenceServerClient(endpoints.grpc)
    result, sent = LoadResult(protocol, concurrency), [0]
    deadline = time.monotonic() + max_seconds

    async def one_client() -> None:
        while sent[0] < max_requests and time.monotonic() < deadline:
            payload = payloads[sent[0] % len(payloads)]
            sent[0] += 1
            inputs = []
            for name, array in payload.items():
                tensor = aio.InferInput(name, list(array.shape), _datatype(array))
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            start = time.perf_counter()
            try:
                await client.infer(model, inputs)
            except Exception as error:  # every failed request counts, whatever its kind
                result.failures += 1
                result.first_failure = result.first_failure or str(error).splitlines()[0][:300]
                continue
            result.latencies_ms.append(1000 * (time.perf_counter() - start))

    began = time.perf_counter()
    try:
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    finally:
        result.seconds = time.perf_counter() - began
        await client.close()
    return result


def _datatype(array: np.ndarray) -> str:
    return {np.dtype(np.object_): "BYTES", np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32"}[array.dtype]


def text_payloads(texts: Sequence[str], task: str | None = None) -> list[Payload]:
    """One `text_input` row per request (and its `task`, for a multi-task export's mixed traffic)."""
    from hyperexport.serve.interfaces import TASK_INPUT, TEXT_INPUT

    payloads = [{TEXT_INPUT: np.array([[text.encode()]], dtype=np.object_)} for text in texts]
    if task is not None:
        for payload in payloads:
            payload[TASK_INPUT] = np.array([[task.encode()]], dtype=np.object_)
    return payloads


def server_rss_mb(root_pid: int) -> float:
    """Resident memory of `root_pid` and every process under it (tritonserver, its model processes), MB."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total / 2**20


def batch_sizes(endpoints: Endpoints, model: str) -> dict[int, int]:
    """{batch size: executions} that Triton ran `model` with (its statistics extension)."""
    with urllib.request.urlopen(f"http://{endpoints.http}/v2/models/{model}/stats", timeout=10) as answer:
        stats = json.load(answer)["model_stats"][0]
    return {int(entry["batch_size"]): int(entry["compute_infer"]["count"]) for entry in stats.get("batch_stats", [])}


def in_process(export_dir: str | Path, examples: Sequence[dict], batch_sizes: Sequence[int],
               latency_calls: int) -> dict:
    """`predict`'s path in this process (examples formatted, tokenized, run by ONNX Runtime, labelled):
    throughput at each batch size over all `examples`, and latency percentiles of `latency_calls`
    single-example calls: what the server is compared with. A multi-task export's examples name their
    task in a `task` field, as they do for `predict`."""
    from hyperexport.model.build import load_tokenizer
    from hyperexport.runtime.examples import read_sources, read_task_sources
    from hyperexport.runtime.exports import export_backend
    from hyperexport.runtime.heads import label_examples
    from hyperexport.runtime.multitask import label_task_examples

    export = ExportFolder.open(export_dir)
    tokenizer = load_tokenizer(str(export.tokenizer_dir))

    def label(rows: Sequence[dict], batch: int) -> None:
        if export.is_multitask:
            indices, sources = read_task_sources(export.task_table, None, list(rows))
            label_task_examples(backend, tokenizer, export.task_table, indices, sources, head="classify",
                                batch_size=batch)
        else:
            label_examples(backend, tokenizer, export.facts, read_sources(export.facts, list(rows)), head="classify",
                           batch_size=batch)

    throughput = {}
    with export_backend(export) as backend:
        label(examples[:4], 4)  # sessions made, first-call work done
        for batch in batch_sizes:
            start = time.perf_counter()
            for first in range(0, len(examples), batch):
                label(examples[first:first + batch], batch)
            throughput[batch] = len(examples) / (time.perf_counter() - start)
        latencies = []
        for index in range(latency_calls):
            start = time.perf_counter()
            label(examples[index % len(examples):index % len(examples) + 1], 1)
            latencies.append(1000 * (time.perf_counter() - start))
    p50, p95, p99 = (float(np.percentile(latencies, q)) for q in (50, 95, 99))
    best = max(throughput, key=throughput.__getitem__)
    return {"throughput_per_s": throughput, "best_batch": best, "best_throughput_per_s": throughput[best],
            "batch1_p50_ms": p50, "batch1_p95_ms": p95, "batch1_p99_ms": p99}
