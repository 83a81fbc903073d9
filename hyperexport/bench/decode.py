"""Decode steps against the memory bound: what one greedy step must read, and how long it takes.

At batch 1 a decode step multiplies one token's activations by every decoder weight and the LM head:
the step is bound by how fast the machine streams those bytes (`bandwidth.read_bandwidth`), not by
arithmetic. `step_bytes` counts them from the decode-step graph itself (at its precision, packed or
not: a packed copy has the same bytes), plus the cross-attention and self-attention caches the step
reads; `StepTimer` times the step calls inside the real greedy loop.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyperexport.contracts.names import DECODER_WITH_PAST_GRAPH
from hyperexport.runtime.backends import Feeds, GraphBackend, Wrapping, keeping_infer

LOOKUP_OPS = {"Gather"}  # a lookup reads the rows it gathers, not its table


def weight_read_bytes(graph_file: Path) -> int:
    """Bytes of the initializers one call of the graph reads in full (lookup tables excluded: a step reads
    B rows of them); each distinct tensor once."""
    import onnx

    graph = onnx.load(str(graph_file), load_external_data=False).graph
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    seen, total = set(), 0
    for tensor in graph.initializer:
        if readers.get(tensor.name, LOOKUP_OPS) <= LOOKUP_OPS:
            continue
        place = _place(tensor)
        if place not in seen:
            seen.add(place)
            total += _nbytes(tensor)
    return total


def step_bytes(graph_file: Path, batch: int, source_len: int, past_len: float, layers: int, heads: int,
               d_kv: int, cache_itemsize: int = 4) -> int:
    """Bytes one decode step reads: the weights (`weight_read_bytes`), the cross-attention keys/values
    [B, heads, S, d_kv] and the self-attention past [B, heads, past_len, d_kv] of every layer."""
    per_position = 2 * layers * heads * d_kv * cache_itemsize * batch  # keys and values
    return weight_read_bytes(graph_file) + int(per_position * (source_len + past_len))


class StepTimer(Wrapping):
    """A backend that times every call of the decode-step graph (and passes everything through)."""

    def __init__(self, backend: GraphBackend, graph: str = DECODER_WITH_PAST_GRAPH):
        self.backend, self.graph = backend, graph
        self.seconds: list[float] = []
        self._keeping = keeping_infer(backend)

    def infer(self, graph: str, feeds: Feeds) -> dict:
        return self._timed(graph, lambda: self.backend.infer(graph, feeds))

    def infer_keeping(self, graph: str, feeds: Mapping[str, Any], keep: str) -> dict[str, Any]:
        return self._timed(graph, lambda: self._keeping(graph, feeds, keep))

    def _timed(self, graph: str, call) -> dict:
        start = time.perf_counter()
        outputs = call()
        if graph == self.graph:
            self.seconds.append(time.perf_counter() - start)
        return outputs


def _place(tensor) -> tuple:
    entries = {e.key: e.value for e in tensor.external_data}
    return (entries["location"], entries.get("offset", "0")) if entries else ("inline", tensor.name)


def _nbytes(tensor) -> int:
    import numpy as np
    import onnx

    if tensor.external_data:
        return int(next(e.value for e in tensor.external_data if e.key == "length"))
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
