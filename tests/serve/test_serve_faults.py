"""`hyperexport serve` under faults, each test with a server of its own: SIGKILL under load and a restart
on the same ports (the same answers, the exports unchanged, nothing of the killed server left), SIGTERM
under load (every request in flight is answered), and a soak of 20,000 requests (resident memory)."""

from __future__ import annotations

import json
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import SHORT_RTE_EXAMPLES, tree_digest, verified_tiny_export
from hyperexport.bench.serving import LoadResult, ServeProcess, run_load, server_rss_mb, text_payloads
from hyperexport.contracts.names import SERVE_FOLDER_PREFIX
from hyperexport.serve.remote import predict_remote

PAYLOADS = text_payloads([json.dumps(example) for example in SHORT_RTE_EXAMPLES])


@pytest.fixture(scope="module")
def export(tiny_rte, tmp_path_factory):
    return verified_tiny_export(tiny_rte, tmp_path_factory.mktemp("faults"))


def in_background(*args) -> tuple[threading.Thread, list[LoadResult]]:
    results: list[LoadResult] = []
    thread = threading.Thread(target=lambda: results.append(run_load(*args)))
    thread.start()
    return thread, results


def descendants(pid: int) -> set[int]:
    children: dict[int, set[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(parent, set()).add(int(stat.parent.name))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.add(child)
            stack.append(child)
    return found


def gone(pids: set[int], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow  # a server under load killed, then a second one started
def test_sigkill_under_load_then_a_restart_answers_the_same_and_the_exports_are_unchanged(export):
    before = tree_digest(export)
    server = ServeProcess([export]).start()
    answers = predict_remote(server.endpoints.grpc, "rte", SHORT_RTE_EXAMPLES)
    children = descendants(server.process.pid)
    folders = list(Path(tempfile.gettempdir()).glob(f"{SERVE_FOLDER_PREFIX}{server.process.pid}-*"))
    thread, _ = in_background(server.endpoints, "grpc", "rte_classify", PAYLOADS, 8, 10**6, 4.0)
    time.sleep(1.5)
    server.process.kill()  # SIGKILL: no handler runs
    thread.join()
    server.process.wait()
    assert gone(children, within=30), "tritonserver or a model process outlived the killed serve"
    with ServeProcess([export], endpoints=server.endpoints) as restarted:  # the same ports, at once
        assert predict_remote(restarted.endpoints.grpc, "rte", SHORT_RTE_EXAMPLES) == answers
        assert predict_remote("http://" + restarted.endpoints.http, "rte", SHORT_RTE_EXAMPLES) == answers
    assert folders and not any(folder.exists() for folder in folders)  # the restart removed the killed one's
    assert tree_digest(export) == before


def pending_requests(server: ServeProcess, model: str) -> float:
    with urllib.request.urlopen(server.endpoints.metrics_url, timeout=10) as answer:
        metrics = answer.read().decode()
    found = re.search(rf'nv_inference_pending_request_count{{model="{model}",version="1"}} (\S+)', metrics)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_under_load_answers_every_request_in_flight(export, stop):
    """16 requests (8 over HTTP through serve's guard, 8 over gRPC) wait in Triton's queue (3 s delay) when
    serve gets SIGTERM (or SIGINT, Ctrl-C): all 16 are answered, then serve ends cleanly and removes its folder."""
    server = ServeProcess([export], "--max-queue-delay-us", "3000000", "--max-batch-size", "64").start()
    folders = list(Path(tempfile.gettempdir()).glob(f"{SERVE_FOLDER_PREFIX}{server.process.pid}-*"))
    loads = [in_background(server.endpoints, protocol, "rte_classify", PAYLOADS, 8, 8, 60.0)
             for protocol in ("http", "grpc")]
    deadline = time.monotonic() + 20
    while pending_requests(server, "rte_classify") < 16 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pending_requests(server, "rte_classify") == 16
    server.process.send_signal(stop)
    for thread, _ in loads:
        thread.join()
    code, out, err = server.stop()
    for _, [result] in loads:
        assert (len(result.latencies_ms), result.failures) == (8, 0), result.first_failure
    assert code == 0 and f"stopped ({stop.name}): in-flight requests finished" in out, err
    assert folders and not any(folder.exists() for folder in folders)


@pytest.mark.slow  # about 30 s here: 20,000 requests
def test_a_soak_of_20000_requests_grows_resident_memory_by_at_most_5_percent(export):
    with ServeProcess([export]) as server:
        for protocol in ("http", "grpc"):  # warm: every connection, batch shape and allocator pool in use once
            run_load(server.endpoints, protocol, "rte_classify", PAYLOADS, 16, 1000, 60)
        before = server_rss_mb(server.process.pid)
        loads = [in_background(server.endpoints, protocol, "rte_classify", PAYLOADS, 16, 10_000, 600)
                 for protocol in ("http", "grpc")]
        for thread, _ in loads:
            thread.join()
        after = server_rss_mb(server.process.pid)
    for _, [result] in loads:
        assert (len(result.latencies_ms), result.failures) == (10_000, 0), result.first_failure
    assert after <= 1.05 * before, f"resident memory {before:.0f} MB -> {after:.0f} MB"
    print(f"soak: 20,000 requests, resident memory {before:.1f} MB -> {after:.1f} MB "
          f"({100 * (after / before - 1):+.2f}%)",
          file=sys.stderr)
