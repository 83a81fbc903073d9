"""The Triton Inference Server that nvidia-pytriton's wheel ships (`pytriton/tritonserver/bin/tritonserver`,
Triton 2.51, with its Python backend), run as a child process of `serve`.

- backend directory: links, in the serve folder, to the wheel's Python backend and to the backend stub
  built for this interpreter's Python version (the wheel ships one per version);
- environment: the stub embeds `libpython3.X.so`, found through the loader path: the running interpreter's
  library folder goes first (a system libpython of another patch release fails inside the stub), and its
  `bin/` first on PATH, so the stub's Python is this environment, hyperexport included. The served
  models run ONNX Runtime or TensorRT, so transformers loads tokenizers without torch (USE_TORCH=0);
- process: its own session and process group (a terminal's Ctrl-C reaches `serve`, which stops Triton in
  order, not the backend processes mid-request). If `serve` is killed, Triton dies with it (Linux
  parent-death signal) and a watchdog shell kills Triton's group: a model process caught mid-request
  when its Triton died was seen hanging for good instead of exiting, as it does otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hyperexport.contracts.names import BACKENDS_DIR
from hyperexport.errors import UserError

EXIT_TIMEOUT_S = 30  # Triton's wait for in-flight requests when it is stopped
READY_TIMEOUT_S = 600  # loading large exports on a busy machine takes minutes
STUB = "triton_python_backend_stub"
LOOPBACK = "127.0.0.1"
_GET_TRITON = "serving needs the Triton server that nvidia-pytriton ships: pip install -e '.[serve]'"
_HARMLESS = ("cuda", "nvml", "dcgm", "gpu metrics", "pinned memory")  # log lines of a machine without a GPU


@dataclass(frozen=True)
class Endpoints:
    host: str  # the address Triton binds
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def client_host(self) -> str:
        """Where a client on this machine reaches the server."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)

    def _address(self, port: int) -> str:
        host = self.client_host
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address in brackets

    @property
    def http(self) -> str:
        return self._address(self.http_port)

    @property
    def grpc(self) -> str:
        return self._address(self.grpc_port)

    @property
    def ready_url(self) -> str:
        return f"http://{self.http}/v2/health/ready"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._address(self.metrics_port)}/metrics"


def distribution() -> Path:
    """nvidia-pytriton's `tritonserver/` folder (bin, backends, stubs), found without importing pytriton."""
    spec = importlib.util.find_spec("pytriton")
    locations = spec.submodule_search_locations if spec else None
    folder = Path(next(iter(locations))) / "tritonserver" if locations else None
    if folder is None or not (folder / "bin" / "tritonserver").is_file():
        raise UserError(_GET_TRITON)
    return folder


def link_backends(folder: Path, dist: Path) -> Path:
    """`folder/backends/python/`: the wheel's Python backend and the stub of this Python; returns `backends/`."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / STUB
    if not stub.is_file():
        raise UserError(f"nvidia-pytriton has no Python backend stub for Python {version}: run serve with a Python "
                        "it ships one for (3.8 to 3.13)")
    python = folder / BACKENDS_DIR / "python"
    python.mkdir(parents=True)
    for path in (dist / "backends" / "python").iterdir():
        if path.is_file():
            (python / path.name).symlink_to(path)
    (python / STUB).symlink_to(stub)
    return folder / BACKENDS_DIR


def server_environment(dist: Path) -> dict[str, str]:
    env = dict(os.environ)
    libraries = [sysconfig.get_config_var("LIBDIR") or "", str(dist.parents[1] / "nvidia_pytriton.libs"),
                 env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(path for path in libraries if path)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["USE_TORCH"] = "0"
    env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    return env


def free_ports(count: int) -> list[int]:
    """Loopback ports nothing listens on now (the kernel's choice; another process could take one first)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def server_command(dist: Path, repository: Path, backends: Path, endpoints: Endpoints, http_port: int) -> list[str]:
    """Triton's command line: gRPC and metrics on the endpoints' address, HTTP on `http_port` of the loopback
    (behind `serve.http_guard`)."""
    host = endpoints.host
    return [str(dist / "bin" / "tritonserver"), f"--model-repository={repository}", f"--backend-directory={backends}",
            "--disable-auto-complete-config", "--strict-readiness=true", f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            f"--http-address={LOOPBACK}", f"--http-port={http_port}",
            f"--grpc-address={host}", f"--grpc-port={endpoints.grpc_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=false", f"--metrics-address={host}",
            f"--metrics-port={endpoints.metrics_port}"]


# the watchdog: stdin is a pipe only serve writes to, so it reads EOF when serve ends, however it ends
_WATCHDOG = "read _; kill -s KILL -- -{group} 2>/dev/null"  # POSIX form: dash has no -KILL --


def _die_with_parent() -> None:  # in the child, before exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class TritonProcess:
    """tritonserver as a child process, its output in `log_file`."""

    def __init__(self, command: list[str], env: dict[str, str], log_file: Path):
        self.command, self.env, self.log_file = command, env, log_file
        self.process: subprocess.Popen | None = None
        self.watchdog: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_file, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=_die_with_parent)
        self.watchdog = subprocess.Popen(["/bin/sh", "-c", _WATCHDOG.format(group=self.process.pid)],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)

    def exited(self) -> int | None:
        assert self.process is not None
        return self.process.poll()

    def wait_ready(self, ready_url: str, stop: Callable[[], bool], timeout: float = READY_TIMEOUT_S) -> bool:
        """True once Triton's readiness endpoint answers 200; False if `stop()` turned true first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not stop():
            if self.exited() is not None:
                raise UserError(f"tritonserver stopped before it was ready: {self.first_error()}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as answer:
                    if answer.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        if stop():
            return False
        raise UserError(f"tritonserver was not ready after {timeout:.0f} s: start fewer or smaller exports, or "
                        "check the machine's load")

    def stop(self) -> int:
        """SIGTERM: Triton refuses new requests, finishes those in flight, unloads the models; SIGKILL after
        its exit timeout. Returns its exit code."""
        assert self.process is not None
        if self.watchdog is not None:  # stopped here in order: the watchdog is not needed
            self.watchdog.kill()
            self.watchdog.wait()
            if self.watchdog.stdin is not None:  # started with stdin=PIPE: closing it is what it waits on
                self.watchdog.stdin.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(EXIT_TIMEOUT_S + 15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        code = self.process.wait()
        if code != 0:  # a crashed or killed Triton: its model processes may outlive it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        return code

    def first_error(self) -> str:
        """The first error line of Triton's log, without its timestamp and source location."""
        lines = self.log_file.read_text(errors="replace").splitlines() if self.log_file.is_file() else []
        errors = [line for line in lines if line.startswith("E") and not any(h in line.lower() for h in _HARMLESS)]
        if not errors:
            return f"see its log, {self.log_file}"
        message = errors[0].split("] ", 1)[-1].strip().strip('"')
        return " ".join(message.replace('\\"', '"').split())
