"""Weights several graphs of a folder read in place, mapped once for all their ONNX Runtime sessions.

An export stores each weight once (`export.weights`); ONNX Runtime would still load a tensor once per
session that names it. The tied embedding is read in place by every graph that uses it (lookups gather
a few of its columns; a decode step's fp32 head multiplies by it unpacked), so this module maps it once,
read-only, from the shared file and hands the same buffer to each session (`add_initializer`). Tensors a
session packs for its MatMuls (every other weight) are left to ONNX Runtime: it maps each from the
file, packs it and lets the original go.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

IN_PLACE_READERS = {"Gather"}  # operators that read an initializer where it lies (a few rows or columns)
ONNX_TO_NUMPY = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16"}


@dataclass(frozen=True)
class Place:
    """Where a tensor's bytes lie: file (relative to the folder), offset, length, and what they are."""

    location: str
    offset: int
    length: int
    dtype: str
    shape: tuple[int, ...]


def in_place_tensors(graph) -> dict[str, Place]:
    """{initializer name: its place} for the external initializers `graph` reads in place: those only
    `Gather` reads, and those that are also graph inputs (defaults ONNX Runtime does not pack)."""
    import onnx

    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    inputs = {value.name for value in graph.input}
    places = {}
    for tensor in graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL or tensor.data_type not in ONNX_TO_NUMPY:
            continue
        if tensor.name in inputs or readers.get(tensor.name, {"?"}) <= IN_PLACE_READERS:
            entry = {e.key: e.value for e in tensor.external_data}
            places[tensor.name] = Place(entry["location"], int(entry.get("offset", 0)), int(entry["length"]),
                                        ONNX_TO_NUMPY[tensor.data_type], tuple(tensor.dims))
    return places


class SharedWeights:
    """The in-place tensors that at least two graphs of a folder read, each mapped once."""

    def __init__(self, folder: Path, graph_files: Mapping[str, Path]):
        import onnx

        self.folder = Path(folder)
        self.places = {graph: in_place_tensors(onnx.load(str(path), load_external_data=False).graph)
                       for graph, path in graph_files.items() if path.is_file() and path.parent == self.folder}
        readers: dict[Place, int] = {}
        for places in self.places.values():
            for place in set(places.values()):
                readers[place] = readers.get(place, 0) + 1
        self.shared = {place for place, count in readers.items() if count > 1}
        self.maps: dict[str, np.memmap] = {}  # location -> read-only numpy memmap of the whole file
        self.values: dict[Place, object] = {}  # place -> OrtValue over its bytes

    def initializers(self, graph: str) -> dict[str, object]:
        """{initializer name: OrtValue} to add to `graph`'s session options."""
        return {name: self._value(place) for name, place in self.places.get(graph, {}).items() if place in self.shared}

    def _value(self, place: Place):
        import numpy as np
        import onnxruntime as ort

        if place not in self.values:
            if place.location not in self.maps:
                self.maps[place.location] = np.memmap(self.folder / place.location, dtype=np.uint8, mode="r")
            data = self.maps[place.location][place.offset:place.offset + place.length]
            self.values[place] = ort.OrtValue.ortvalue_from_numpy(data.view(place.dtype).reshape(place.shape))
        return self.values[place]
