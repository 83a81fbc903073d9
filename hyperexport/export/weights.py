"""Each weight stored once: the graphs of an export folder keep their initializers in one external data
file (`GRAPH_WEIGHTS_FILE`), each distinct tensor written once, so graphs that hold the same weights (the
encoder's and the decoder's embedding; a classify graph's whole backbone) share the bytes on disk, and
T5's tied LM head reads the embedding table (`export.tied_embedding`).

A tensor that lookups read in place and another operator packs (the tied table: Gather, and the head's
Transpose -> MatMul) gets a second name for the packing readers (`split_packed_readers`): the same bytes
on disk, but a backend maps the lookups' name once for all sessions (`runtime.shared_weights`) while
ONNX Runtime maps, packs and lets go of the other. Offsets are page-aligned, so that tensors can be
mapped instead of read. A post-process over an export folder's graphs (the multi-task export calls it
too).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from hyperexport.contracts.names import GRAPH_WEIGHTS_FILE

ALIGNMENT = 4096  # bytes: a page
MIN_EXTERNAL_BYTES = 1024  # smaller tensors (shapes, scalars, norms of tiny test models) stay in the graph
PROTOBUF_LIMIT = 2**31 - 2**26  # a graph saved as one protobuf must stay under 2 GiB
PACKED_SUFFIX = ".packed"  # the second name of a tensor that lookups read in place and a MatMul packs


def store_weights_once(folder: Path) -> None:
    """Split the packing readers off in-place tensors, then rewrite every `*.onnx` graph of `folder` to
    keep its large initializers in one shared, deduplicated `GRAPH_WEIGHTS_FILE`; the external data
    files the graphs used before are removed. Tie the embedding first (`export.onnx.finish_graphs`)."""
    import onnx

    folder = Path(folder)
    paths = sorted(folder.glob("*.onnx"))
    old_files = {name for path in paths for name in external_data_files(path)} - {GRAPH_WEIGHTS_FILE}
    models = {path: onnx.load(str(path)) for path in paths}
    for model in models.values():
        split_packed_readers(model.graph)
    staged = folder / f".{GRAPH_WEIGHTS_FILE}.partial"
    written: dict[str, int] = {}  # content key -> offset
    with open(staged, "wb") as out:
        for model in models.values():
            for tensor in initializers(model.graph):
                if tensor.HasField("raw_data") and len(tensor.raw_data) >= MIN_EXTERNAL_BYTES:
                    _externalize(tensor, out, written)
    staged.replace(folder / GRAPH_WEIGHTS_FILE)
    for path, model in models.items():
        onnx.save(model, str(path))
    for name in old_files:
        (folder / name).unlink(missing_ok=True)


def initializers(graph) -> Iterator:
    """Every initializer of `graph` and of its subgraphs (a BeamSearch node's encoder and decoder)."""
    import onnx

    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from initializers(attribute.g)


def external_data_files(path: Path) -> list[str]:
    """The external data files a graph's initializers (subgraphs' too) name, relative to its folder."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sorted({entry.value for tensor in initializers(graph) if tensor.data_location == onnx.TensorProto.EXTERNAL
                   for entry in tensor.external_data if entry.key == "location"})


def save_graph(model, path: Path) -> None:
    """Save a graph; one over the protobuf limit (t5-3b and up) keeps its weights beside it until
    `store_weights_once` moves them into the shared file."""
    import onnx

    if model.ByteSize() < PROTOBUF_LIMIT:
        onnx.save(model, str(path))
    else:
        onnx.save(model, str(path), save_as_external_data=True, location=f"{Path(path).name}_data")


def _externalize(tensor, out, written: dict[str, int]) -> None:
    """Point `tensor` at its bytes in the shared file, writing them first if no tensor wrote them yet."""
    import onnx

    data = tensor.raw_data
    key = hashlib.sha256(b"%d:" % tensor.data_type + data).hexdigest()  # the same bytes under any shape
    if key not in written:
        out.write(b"\0" * (-out.tell() % ALIGNMENT))
        written[key] = out.tell()
        out.write(data)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for field, value in (("location", GRAPH_WEIGHTS_FILE), ("offset", written[key]), ("length", len(data))):
        entry = tensor.external_data.add()
        entry.key, entry.value = field, str(value)


def split_packed_readers(graph) -> int:
    """Give an initializer read both by lookups (`Gather`, in place) and by operators that pack it (the
    int8 head's MatMulInteger, a classify graph's head) a second name for the packing readers: the same
    bytes in the file, but the lookups' name can be mapped once for every session while ONNX Runtime
    packs the other. Returns how many were split."""
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    inputs = {value.name for value in graph.input}
    split = {t.name for t in graph.initializer
             if t.name not in inputs and "Gather" in readers.get(t.name, set()) and len(readers[t.name]) > 1}
    for tensor in [t for t in graph.initializer if t.name in split]:
        copy = graph.initializer.add()
        copy.CopyFrom(tensor)
        copy.name = f"{tensor.name}{PACKED_SUFFIX}"
    for node in graph.node:
        if node.op_type != "Gather":
            for i, name in enumerate(node.input):
                if name in split:
                    node.input[i] = f"{name}{PACKED_SUFFIX}"
    return len(split)


def weight_bytes(folder: Path) -> int:
    """The bytes of the distinct weights the folder's graphs hold (what any storage must hold)."""
    import onnx
    import onnx.numpy_helper

    seen: dict[str, int] = {}
    for path in sorted(Path(folder).glob("*.onnx")):
        for tensor in initializers(onnx.load(str(path)).graph):
            data = onnx.numpy_helper.to_array(tensor, base_dir=str(folder)).tobytes()
            seen[hashlib.sha256(data).hexdigest()] = len(data)
    return sum(seen.values())
