"""Resident memory of a loaded export, measured in a fresh process (this one holds every variant).

`python -m hyperexport.bench.memory FOLDER THREADS NEW_TOKENS` warms ONNX Runtime on a tiny graph (its
code pages are not the export's), then reports the growth of the resident set (RSS) after opening the
export's generate sessions and after one greedy generation at batch 1, 128 tokens, in MB. The second
figure also counts the pages of the embedding table that lookups touched: the kernel maps page-cache
pages of the file around each row read (up to a 2 MB folio), so a batch of random tokens maps most of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hyperexport.contracts.export import GenerationIds
from hyperexport.contracts.names import DECODER_GRAPH, DECODER_WITH_PAST_GRAPH, ENCODER_GRAPH

SOURCE_TOKENS = 128


def resident_mb(folder: Path, threads: int, new_tokens: int) -> dict[str, float]:
    """{"files_mb", "load_mb", "generate_mb"} of the export in `folder` (see the module doc)."""
    result = subprocess.run([sys.executable, "-m", "hyperexport.bench.memory", str(folder), str(threads),
                             str(new_tokens)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def _warm_onnxruntime() -> None:
    import numpy as np
    import onnxruntime as ort
    from onnx import helper

    value = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "warm",
                              [value("a", 1, [2, 2]), value("b", 1, [2, 2])], [value("c", 1, [2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    one = np.ones((2, 2), dtype=np.float32)
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": one, "b": one})


def _measure(folder: Path, threads: int, new_tokens: int) -> dict[str, float]:
    import numpy as np

    from hyperexport.runtime.backends import OnnxRuntimeBackend
    from hyperexport.runtime.generation import greedy_generate

    _warm_onnxruntime()
    files = sum(p.stat().st_size for p in folder.iterdir() if ".onnx" in p.name) / 2**20
    before = _rss_mb()
    backend = OnnxRuntimeBackend(folder, threads=threads)
    for graph in (ENCODER_GRAPH, DECODER_GRAPH, DECODER_WITH_PAST_GRAPH):
        if backend.has(graph):
            backend.session(graph)
    loaded = _rss_mb() - before
    ids = np.random.default_rng(0).integers(3, _vocabulary(folder), (1, SOURCE_TOKENS))  # tokens from all of it
    greedy_generate(backend, ids, np.ones_like(ids), new_tokens, GenerationIds.read(folder), min_new_tokens=new_tokens)
    return {"files_mb": files, "load_mb": loaded, "generate_mb": _rss_mb() - before}


def _vocabulary(folder: Path) -> int:
    """The vocabulary size: the last dimension of the decoder's logits."""
    import onnx

    logits = onnx.load(str(folder / DECODER_WITH_PAST_GRAPH), load_external_data=False).graph.output[0]
    return logits.type.tensor_type.shape.dim[-1].dim_value


if __name__ == "__main__":
    print(json.dumps(_measure(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
