"""`serve`: verified exports behind a real Triton Inference Server, in the foreground.

1. Every export is checked first: its manifest (sha256 of every file), a passed `verify` for its
   precision, a runtime for it on this machine, a tokenizer. Any problem is one line and nothing starts.
2. A temporary folder owned by this process (`<tmp>/hyperexport-serve-<pid>-*`) gets the model repository
   (`serve.repository`: Python-backend models that run the exports through hyperexport's runtime, in place)
   and the links to Triton's Python backend (`serve.tritonserver`).
3. tritonserver starts with gRPC and metrics on the given address and ports, and its HTTP server on a
   private loopback port behind `serve.http_guard` (on the given HTTP port), which keeps request bodies
   that crash Triton 2.51 away from it. `serve` reports the endpoints once Triton's own
   `/v2/health/ready` answers.
4. SIGINT or SIGTERM: the guard takes no new connections and Triton is stopped with SIGTERM, so it
   refuses new requests and finishes those in flight; then the folder is removed. A killed `serve`
   takes Triton and its model processes with it; the next `serve` removes the folders of processes
   that are gone.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hyperexport.contracts.export import ExportFolder
from hyperexport.contracts.names import SERVE_FOLDER_PREFIX, SERVER_LOG_FILE
from hyperexport.errors import UserError
from hyperexport.options import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_MAX_QUEUE_DELAY_US,
    DEFAULT_METRICS_PORT,
    DEFAULT_SERVE_HOST,
    DEFAULT_SERVE_INSTANCES,
    DEFAULT_SERVE_MAX_BATCH,
)
from hyperexport.runtime.exports import export_backend
from hyperexport.serve.deploy import require_passed_parity
from hyperexport.serve.http_guard import HttpGuard
from hyperexport.serve.repository import Batching, ServedExport, write_repository
from hyperexport.serve.tritonserver import (
    LOOPBACK,
    Endpoints,
    TritonProcess,
    distribution,
    free_ports,
    link_backends,
    server_command,
    server_environment,
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ServerStopped(Exception):
    """tritonserver ended on its own after it was ready (a crash, or killed from outside)."""


@dataclass(frozen=True)
class Serving:
    """What `serve` reports once Triton is ready."""
    endpoints: Endpoints
    exports: tuple[ServedExport, ...]


def open_exports(specs: Sequence[str]) -> list[ServedExport]:
    """`EXPORT` or `NAME=EXPORT` per export, each checked for serving; refused in one line otherwise."""
    if not specs:
        raise UserError("name at least one export folder to serve, e.g. hyperexport serve exports/rte/onnx")
    served = [_open_export(spec) for spec in specs]
    names = [entry.name for entry in served]
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"two exports would be served as {name}: name them, e.g. {name}_2=EXPORT")
    return served


def _open_export(spec: str) -> ServedExport:
    name, separator, path = spec.partition("=")
    export = ExportFolder.open(path if separator else spec)  # the manifest check: a changed file is refused
    name = name if separator else export.manifest.task
    if not _NAME.fullmatch(name):
        raise UserError(f"'{name}' cannot name served models: use letters, digits, '_', '.' and '-'")
    require_passed_parity(export, "serving")
    export_backend(export)  # refuses what cannot run here (bf16 graphs without a GPU, foreign plans)
    if not export.heads:
        raise UserError(f"{export.path} has no graphs to serve: run `hyperexport export --task "
                        f"{export.manifest.task}`")
    if export.tokenizer_dir is None:
        raise UserError(f"{export.path} has no tokenizer, which the served models need: import its run again "
                        "with --tokenizer, then export")
    return ServedExport(name, export)


def remove_stale_folders(root: Path | None = None) -> None:
    """Delete the serve folders of processes that no longer run (a SIGKILLed serve leaves its own)."""
    for folder in Path(root or tempfile.gettempdir()).glob(f"{SERVE_FOLDER_PREFIX}*"):
        pid = folder.name.removeprefix(SERVE_FOLDER_PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def stop_signals() -> Iterator[Callable[[], int | None]]:
    """SIGINT and SIGTERM recorded instead of raised; yields a function that returns the one received."""
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, _frame: received.append(number))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: received[0] if received else None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(exports: Sequence[str], *, host: str = DEFAULT_SERVE_HOST, http_port: int = DEFAULT_HTTP_PORT,
          grpc_port: int = DEFAULT_GRPC_PORT, metrics_port: int = DEFAULT_METRICS_PORT,
          max_batch_size: int = DEFAULT_SERVE_MAX_BATCH, max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
          instances: int = DEFAULT_SERVE_INSTANCES, on_ready: Callable[[Serving], None] = lambda _: None) -> int:
    """Serve `exports` until SIGINT or SIGTERM; returns the signal that stopped it. Raises `UserError`
    before Triton is ready (bad exports, a port in use, ...) and `ServerStopped` if Triton dies after."""
    served = open_exports(exports)
    dist = distribution()
    endpoints = Endpoints(host, http_port, grpc_port, metrics_port)
    _check_port(host, http_port, "--http-port")  # the guard binds it only once Triton is ready: fail early
    [triton_http] = free_ports(1)
    remove_stale_folders()
    folder = Path(tempfile.mkdtemp(prefix=f"{SERVE_FOLDER_PREFIX}{os.getpid()}-"))
    keep = False  # a server that died keeps its folder for its log (the next serve removes it)
    try:
        repository = write_repository(folder, served, Batching(max_batch_size, max_queue_delay_us, instances))
        command = server_command(dist, repository, link_backends(folder, dist), endpoints, triton_http)
        process = TritonProcess(command, server_environment(dist), folder / SERVER_LOG_FILE)
        with stop_signals() as stop:
            process.start()
            try:
                if process.wait_ready(f"http://{LOOPBACK}:{triton_http}/v2/health/ready", lambda: stop() is not None):
                    guard = HttpGuard(host, http_port, LOOPBACK, triton_http)
                    asyncio.run(_serve_http(guard, process, stop, lambda: on_ready(Serving(endpoints, tuple(served)))))
            except ServerStopped:
                keep = True
                raise
            finally:
                process.stop()
            return stop() or signal.SIGTERM
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _check_port(host: str, port: int, option: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            reason = error.strerror or error
            raise UserError(f"cannot listen on {host}:{port} ({reason}): choose another {option}, or stop what uses "
                            "it") from None


async def _serve_http(guard: HttpGuard, process: TritonProcess, stop: Callable[[], int | None],
                      ready: Callable[[], None]) -> None:
    """The HTTP guard until a stop signal: then no new connections, Triton finishes what is in flight
    (answered through the guard), and the guard's connections end."""
    try:
        await guard.start()
    except OSError as error:
        raise UserError(f"cannot listen on {guard.address[0]}:{guard.address[1]} ({error.strerror}): choose another "
                        "--http-port, or stop what uses it") from None
    ready()
    while stop() is None:
        if process.exited() is not None:
            guard.close()
            raise ServerStopped(f"tritonserver stopped on its own (exit code {process.exited()}): "
                                f"{process.first_error()}")
        await asyncio.sleep(0.1)
    guard.close()
    await asyncio.get_running_loop().run_in_executor(None, process.stop)
    await guard.drained(timeout=5)
