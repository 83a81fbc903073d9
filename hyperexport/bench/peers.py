"""`bench --peers`: PyTorch eager and CTranslate2 (int8 and fp32) on the same weights, in the same rotated
rounds as the ONNX Runtime variants, each at its own best setting (`bench.peer_worker` runs them in a
process of their own; CTranslate2 at 1 and 2 threads, the faster counts).

Why `bench --peers` and not a script under benchmarks/: the peers must share the variants' rounds,
inputs and machine facts to give ratios measured side by side, and the report's goals compare them;
a separate script would repeat the subject, the inputs and the rotation. CTranslate2 is an optional
extra (`pip install -e '.[peers]'`); without it `--peers` is a one-line error before any slow work.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hyperexport.bench.peer_worker import (
    BACKBONE_DIR,
    CT2_PRECISIONS,
    CT2_THREADS,
    HYPERNET,
    HYPERNET_FILE,
    PLAIN,
    SIZES_FILE,
    SPEC_FILE,
    ct2_variant,
)
from hyperexport.bench.subject import Subject
from hyperexport.errors import UserError

PEERS_EXTRA = "pip install -e '.[peers]' (ctranslate2)"


class SelfTimed(NamedTuple):
    """A variant's result that carries its own duration (timed where it ran, not across the pipe)."""

    seconds: float


def require_ctranslate2() -> None:
    if not installed("ctranslate2"):
        raise UserError(f"--peers needs CTranslate2, which is not installed here: {PEERS_EXTRA}")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def peer_settings(threads: int) -> dict[str, dict]:
    """How each peer variant runs (reported beside its figures)."""
    torch = {"runtime": "pytorch eager, own process", "threads": threads, "omp_wait_policy": "default (unset)"}
    settings = {PLAIN: torch, HYPERNET: torch}
    for precision, kind in CT2_PRECISIONS.items():
        for count in CT2_THREADS:
            settings[ct2_variant(precision, count)] = {"runtime": f"ctranslate2 {_version('ctranslate2')}, own process",
                                                       "compute_type": kind,
                                                       "intra_threads": count, "inter_threads": 1,
                                                       "omp_wait_policy": "default (unset)"}
    return settings


class PeerWorker:
    """The peers: PyTorch eager and CTranslate2 each in a worker process of its own (the CTranslate2
    models converted first, in a one-shot process), and their variants: fn(ids, mask) -> `SelfTimed`."""

    def __init__(self, subject: Subject, plain_model, folder: Path, threads: int, subject_args: dict):
        self.subject, self.plain, self.folder, self.threads = subject, plain_model, Path(folder), threads
        self.subject_args = subject_args
        self.workers: dict[str, _Worker] = {}  # role -> its process
        self.sizes_mb: dict[str, float] = {}
        self.names: list[str] = []

    def __enter__(self) -> PeerWorker:
        from safetensors.torch import save_model

        self.folder.mkdir(parents=True, exist_ok=True)
        self.plain.save_pretrained(self.folder / BACKBONE_DIR)
        save_model(self.subject.model, str(self.folder / HYPERNET_FILE))
        config = self.plain.config
        (self.folder / SPEC_FILE).write_text(json.dumps({
            "threads": self.threads, "new_tokens": self.subject.new_tokens, "hypernet": self.subject_args,
            "vocab_size": config.vocab_size, "pad_token_id": config.pad_token_id, "eos_token_id": config.eos_token_id}))
        converted = subprocess.run([sys.executable, "-m", WORKER, str(self.folder), "convert"], env=_default_openmp(),
                                   capture_output=True, text=True)
        if converted.returncode != 0:
            raise RuntimeError(f"converting to CTranslate2 failed: {converted.stderr.strip().splitlines()[-1:]}")
        self.sizes_mb = json.loads((self.folder / SIZES_FILE).read_text())
        for role in ("torch", "ctranslate2"):
            self.workers[role] = _Worker(self.folder, role)
            self.names += self.workers[role].names
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers.values():
            worker.close()

    def variants(self) -> dict[str, Callable]:
        return {name: self._timer(worker, name) for worker in self.workers.values() for name in worker.names}

    def logprobs(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        path = self._inputs(arrays)
        return {name: values for worker in self.workers.values()
                for name, values in np.load(worker.ask({"op": "logprobs", "inputs": path})["path"]).items()}

    def _timer(self, worker: _Worker, name: str) -> Callable:
        def timed(input_ids, attention_mask) -> SelfTimed:
            path = self._inputs({"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
            return SelfTimed(worker.ask({"op": "time", "variant": name, "inputs": path})["seconds"])
        return timed

    def _inputs(self, arrays: dict[str, np.ndarray]) -> str:
        key = hashlib.sha1(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values())).hexdigest()
        path = self.folder / f"inputs-{key[:16]}.npz"
        if not path.is_file():
            np.savez(path, **arrays)
        return str(path)


WORKER = "hyperexport.bench.peer_worker"


def _default_openmp() -> dict[str, str]:
    """This environment without the CLI's OMP_WAIT_POLICY: each runtime's OpenMP at its default."""
    return {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}


class _Worker:
    """One worker process (`peer_worker ROLE`) and its line protocol."""

    def __init__(self, folder: Path, role: str):
        self.log_path = folder / f"{role}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-m", WORKER, str(folder), role], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log, text=True, env=_default_openmp())
        self.names: list[str] = self._read()["variants"]

    def ask(self, request: dict) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self.process.stdin is not None
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
        self.log.close()

    def _read(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.log.flush()
            tail = self.log_path.read_text().strip().splitlines()[-3:]
            raise RuntimeError(f"a peers worker stopped: {' | '.join(tail)}")
        return json.loads(line)


def best_settings(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """{"ctranslate2_<precision>": {batch: {"p50_ms", "variant", "intra_threads"}}}: each precision at the
    thread count that was faster in this run's generate rows."""
    p50 = {(r["batch"], r["variant"]): r["p50_ms"] for r in rows if r["head"] == "generate"}
    best: dict[str, dict[str, dict]] = {}
    for precision in CT2_PRECISIONS:
        for batch in sorted({b for b, _ in p50}):
            timed = [(p50[(batch, ct2_variant(precision, t))], t) for t in CT2_THREADS
                     if (batch, ct2_variant(precision, t)) in p50]
            if timed:
                ms, threads = min(timed)
                best.setdefault(f"ctranslate2_{precision}", {})[str(batch)] = {
                    "p50_ms": ms, "variant": ct2_variant(precision, threads), "intra_threads": threads}
    return best
