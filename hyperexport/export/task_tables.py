"""The task tables inside a multi-task export's graphs: every per-task constant, under a name of its own.

Each table is one initializer whose first axis is the task (row t: the task table's task t):
- `task_table.<stack>.<layer>.<position>.<tensor>`: one adapter's down_weight [T, m, d], ..., ln_bias [T, d];
- `task_table.labels`: the classify head's label token ids [T, K, L], -100 padded.
The graphs are traced with distinct random values in every table (`sentinel_tables`), so the exporter can
neither merge two equal tables nor fold one into another constant unseen; each traced graph's tables are
then found by those values and renamed (`name_tables`), and the real rows written (`write_tables`).
`export --add-task` writes longer tables the same way, with no trace. Nothing else in a graph is per task.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from hyperexport.contracts.task import ADAPTER_PREFIX
from hyperexport.model.adapter import POSITIONS, STACKS
from hyperexport.stack import ADAPTER_TENSORS, StackedAdapter, adapter_site, tensor_bytes

TABLE_PREFIX = "task_table."
LABEL_TABLE = f"{TABLE_PREFIX}labels"
LABEL_PAD = -100
_TORCH_DTYPES = {1: torch.float32, 7: torch.int64, 10: torch.float16, 16: torch.bfloat16}  # onnx.TensorProto codes


def table_name(site: str, tensor: str) -> str:
    """'task_table.decoder.1.self_attention.down_weight'."""
    return f"{TABLE_PREFIX}{site}.{tensor}"


def task_rows(tensors: dict[str, torch.Tensor], labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """One task's row of every table: from its task file's `adapters.<stack>.<tensor>` [L, 2, ...] and
    (classify head) its label token ids [K, L]."""
    rows = {}
    for stack in STACKS:
        for tensor in ADAPTER_TENSORS:
            stacked = tensors[f"{ADAPTER_PREFIX}{stack}.{tensor}"]  # [L, 2, ...]
            for layer in range(stacked.shape[0]):
                for position in range(len(POSITIONS)):
                    rows[table_name(adapter_site(stack, layer, position), tensor)] = stacked[layer, position]
    if labels is not None:
        rows[LABEL_TABLE] = labels
    return rows


def stack_rows(rows: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Tables [T, ...] from the tasks' rows; label rows of different sizes padded with -100."""
    tables = {name: torch.stack([row[name] for row in rows]) for name in rows[0] if name != LABEL_TABLE}
    if LABEL_TABLE in rows[0]:
        tables[LABEL_TABLE] = padded_labels([row[LABEL_TABLE] for row in rows])
    return tables


def padded_labels(label_ids: Sequence[torch.Tensor]) -> torch.Tensor:
    """Label token ids [K_t, L_t] per task as one table [T, K, L], -100 padded."""
    slots, length = max(ids.shape[0] for ids in label_ids), max(ids.shape[1] for ids in label_ids)
    table = torch.full((len(label_ids), slots, length), LABEL_PAD, dtype=torch.long)
    for row, ids in enumerate(label_ids):
        table[row, :ids.shape[0], :ids.shape[1]] = ids
    return table


def module_tables(module: nn.Module) -> dict[str, torch.Tensor]:
    """The table buffers of a stacked model (or a scorer around one), by table name."""
    tables = {table_name(adapter.site, name): tensor for adapter in module.modules()
              if isinstance(adapter, StackedAdapter) for name, tensor in adapter.tables().items()}
    labels = getattr(module, "label_table", None)
    if isinstance(labels, torch.Tensor):
        tables[LABEL_TABLE] = labels
    return tables


@contextmanager
def sentinel_tables(module: nn.Module, vocab_size: int) -> Iterator[dict[str, str]]:
    """Every table of `module` filled in place with distinct random values (label ids in [3, vocab)) while
    the block traces; yields {sha256 of a table's bytes: its name}. The real values come back after."""
    generator = torch.Generator().manual_seed(0)
    tables = module_tables(module)
    saved = {name: tensor.clone() for name, tensor in tables.items()}
    digests = {}
    for name, tensor in tables.items():
        if tensor.is_floating_point():
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
        else:
            tensor.copy_(torch.randint(3, vocab_size, tensor.shape, generator=generator))
        digests[hashlib.sha256(tensor_bytes(tensor)).hexdigest()] = name
    if len(digests) != len(tables):
        raise RuntimeError("two sentinel tables came out equal: cannot tell them apart in the graphs")
    try:
        yield digests
    finally:
        with torch.no_grad():
            for name, tensor in tables.items():
                tensor.copy_(saved[name])


def name_tables(path: Path, sentinels: dict[str, str], expected: set[str]) -> None:
    """Rename the tables of a graph traced under `sentinel_tables` to their names; the graph must hold
    exactly the `expected` ones (a table folded into another constant or merged would be missing)."""
    import onnx

    model = onnx.load(str(path))
    renames = {}
    for initializer in model.graph.initializer:
        name = sentinels.get(hashlib.sha256(_raw_bytes(initializer)).hexdigest())
        if name is not None:
            renames[initializer.name] = name
    if set(renames.values()) != expected or len(renames) != len(expected):
        missing = sorted(expected - set(renames.values()))
        raise RuntimeError(f"{path.name}: the traced graph does not hold every task table as its own initializer "
                           f"(missing {missing[:3]}, {len(renames)} found for {len(expected)})")
    _rename(model.graph, renames)
    onnx.save(model, str(path))


def read_tables(path: Path) -> dict[str, torch.Tensor]:
    """The task tables of a graph, by name."""
    import onnx

    model = onnx.load(str(path))
    return {init.name: _tensor(init) for init in model.graph.initializer if init.name.startswith(TABLE_PREFIX)}


def write_tables(path: Path, tables: dict[str, torch.Tensor]) -> None:
    """Replace the graph's task tables (each cast to its initializer's type; the task axis may grow)."""
    import onnx

    model = onnx.load(str(path))
    for index, init in enumerate(model.graph.initializer):
        if init.name.startswith(TABLE_PREFIX):
            value = tables[init.name].to(_TORCH_DTYPES[init.data_type]).contiguous()
            model.graph.initializer[index].CopyFrom(onnx.helper.make_tensor(
                init.name, init.data_type, list(value.shape), tensor_bytes(value), raw=True))
    onnx.save(model, str(path))


def store_tables_half(path: Path) -> None:
    """Store a graph's fp32 tables as fp16, each cast back to fp32 right after its Gather: what an int8
    export does, halving the per-task bytes (its single-task form quantizes the adapters to int8)."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    tables = {init.name for init in graph.initializer
              if init.name.startswith(TABLE_PREFIX) and init.data_type == onnx.TensorProto.FLOAT}
    nodes = []
    for node in graph.node:
        uses = [name for name in node.input if name in tables]
        if uses and (node.op_type != "Gather" or node.input[0] not in tables):
            raise RuntimeError(f"{path.name}: task table {uses[0]} feeds a {node.op_type}, not a Gather")
        nodes.append(node)
        if uses:  # Gather(table_fp16, task_ids) -> Cast(float) under the original output name
            gathered = node.output[0]
            node.output[0] = f"{gathered}_fp16"
            nodes.append(onnx.helper.make_node("Cast", [node.output[0]], [gathered], name=f"{node.name}_to_fp32",
                                               to=onnx.TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    for index, init in enumerate(graph.initializer):
        if init.name in tables:
            half = _tensor(init).to(torch.float16).contiguous()
            graph.initializer[index].CopyFrom(onnx.helper.make_tensor(
                init.name, onnx.TensorProto.FLOAT16, list(half.shape), tensor_bytes(half), raw=True))
    onnx.save(model, str(path))


def _raw_bytes(initializer) -> bytes:
    from onnx import numpy_helper

    return initializer.raw_data if initializer.raw_data else numpy_helper.to_array(initializer).tobytes()


def _tensor(initializer) -> torch.Tensor:
    dtype = _TORCH_DTYPES[initializer.data_type]
    return torch.frombuffer(bytearray(_raw_bytes(initializer)), dtype=dtype).reshape(tuple(initializer.dims))


def _rename(graph, renames: dict[str, str]) -> None:
    for initializer in graph.initializer:
        initializer.name = renames.get(initializer.name, initializer.name)
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in renames:
                node.input[index] = renames[name]
    for value in graph.input:
        value.name = renames.get(value.name, value.name)
