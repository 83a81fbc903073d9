"""T5's tied embedding, one tensor in every graph of an export folder.

T5 ties its LM head to the input embedding, and the exporter constant-folds the head into a transposed
copy: a [d, V] initializer beside the [V, d] table (16.4M parameters each for t5-small). `tie_embedding`
finds such pairs by content, names the table `TIED_TABLE` in every graph that holds it (the encoder's
lookup too), and makes the head `Transpose(TIED_TABLE)`, which ONNX Runtime folds once at load (TensorRT
at build) into the layout its MatMul packs. Lookups then read the [V, d] table where it lies, touching
only the rows of the tokens they gather.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

TIED_TABLE = "tied_embedding"  # the table's initializer name in every graph (not a file)
FLOAT_TYPES = (1, 10, 16)  # onnx.TensorProto FLOAT, FLOAT16, BFLOAT16


def tie_embedding(folder: Path) -> int:
    """Tie every graph of `folder` to one table (see the module doc); returns how many graphs changed.
    Idempotent: a folder tied already has no transposed copy left."""
    import onnx

    from hyperexport.export.weights import save_graph

    models = {path: onnx.load(str(path)) for path in sorted(Path(folder).glob("*.onnx"))}
    tables = set()  # content keys of tied tables
    for model in models.values():
        tables |= set(_tied_pairs(model.graph))
    changed = 0
    for path, model in models.items():
        pairs = _tied_pairs(model.graph)
        renamed = _name_tables(model.graph, tables)
        for head in pairs.values():
            _read_head_through_table(model.graph, head)
        if renamed or pairs:
            save_graph(model, path)
            changed += 1
    return changed


def _tied_pairs(graph) -> dict:
    """{content key of a [V, d] table: its [d, V] transposed copy's name} among `graph`'s fp32 initializers."""
    from onnx import numpy_helper

    matrices = [t for t in graph.initializer if len(t.dims) == 2 and t.data_type in FLOAT_TYPES]
    tables = {content_key(numpy_helper.to_array(t)) for t in matrices if t.dims[0] > t.dims[1]}
    shapes = {key[0] for key in tables}
    pairs = {}
    for head in (t for t in matrices if t.dims[0] < t.dims[1] and tuple(reversed(t.dims)) in shapes):
        key = content_key(numpy_helper.to_array(head).T)
        if key in tables:
            pairs[key] = head.name
    return pairs


def _name_tables(graph, tables: set) -> bool:
    """Rename the initializer holding a tied table to `TIED_TABLE` (and every node input reading it)."""
    from onnx import numpy_helper

    shapes = {key[0] for key in tables}
    old = next((t for t in graph.initializer if t.name != TIED_TABLE and tuple(t.dims) in shapes
                and content_key(numpy_helper.to_array(t)) in tables), None)
    if old is None:
        return False
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old.name:
                node.input[i] = TIED_TABLE
    old.name = TIED_TABLE
    return True


def _read_head_through_table(graph, head: str) -> None:
    """Drop the [d, V] copy `head`; a `Transpose` of the table produces a tensor of that name instead."""
    from onnx import helper

    kept = [t for t in graph.initializer if t.name != head]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.node.insert(0, helper.make_node("Transpose", [TIED_TABLE], [head], name=f"{head}/tied", perm=[1, 0]))


def content_key(array) -> tuple:
    """An array's shape and the sha256 of its bytes (C order)."""
    import numpy as np

    return array.shape, hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
