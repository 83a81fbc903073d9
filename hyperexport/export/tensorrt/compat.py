"""Will TensorRT take these ONNX graphs? A check that needs no GPU and no `tensorrt` package.

Per graph: every node (subgraphs included) is an operator of the default ONNX domain that TensorRT's
ONNX parser supports in the targeted version (the list ships as data, `onnx_ops.json`, copied
from onnx/onnx-tensorrt's docs/operators.md with its source and version); no `If` node (optimum's
merged decoder; we build separate decoders); the opset is in the parser's range; the few restrictions
we can see statically hold; and every dynamic input dimension is one a profile from `--batch`/`--seq`
covers (`trt_profiles`). `export --format tensorrt` runs it before building, `verify` for TensorRT
targets.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from hyperexport.contracts.export import ExportFolder
from hyperexport.contracts.names import GENERATE_MODEL_GRAPH
from hyperexport.errors import UserError
from hyperexport.export.tensorrt.profiles import ShapeRanges, input_profile

OPS_FILE = "onnx_ops.json"
SKIPPED_GENERATE_GRAPH = ("an ONNX Runtime artifact (com.microsoft BeamSearch holding the greedy loop): "
                          "TensorRT engines are built from the encoder and decoder graphs")
DEFAULT_DOMAINS = ("", "ai.onnx")
# The ONNX element types an engine takes as input or output -> the torch dtype (by name) the runner
# feeds it with (`runtime.tensorrt`: numpy has no bfloat16, Polygraphy's runner takes torch tensors).
ENGINE_IO_DTYPES = {"float": "float32", "float16": "float16", "bfloat16": "bfloat16", "int32": "int32",
                    "int64": "int64", "bool": "bool", "int8": "int8", "uint8": "uint8"}


@lru_cache(maxsize=1)
def operator_lists() -> dict:
    return json.loads(resources.files(__package__).joinpath(OPS_FILE).read_text())


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def target_version(tensorrt_version: str | None = None) -> str:
    """The shipped list to check against: the newest one not newer than `tensorrt_version` (an
    installed TensorRT's version; 11.x gets the newest list), or the newest list when none is given."""
    shipped = sorted(operator_lists()["versions"], key=_version_key)
    if tensorrt_version is None:
        return shipped[-1]
    wanted = _version_key(tensorrt_version)
    if not wanted:
        raise UserError(f"TensorRT version '{tensorrt_version}' is not like 10.15: give major.minor")
    older = [v for v in shipped if _version_key(v) <= wanted]
    if not older:
        raise UserError(f"no ONNX operator list for TensorRT {tensorrt_version}: the oldest shipped is {shipped[0]}")
    return older[-1]


def _nodes(graph):
    """Every node of `graph` and of its subgraphs (If branches, Loop and Scan bodies)."""
    import onnx

    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _nodes(sub)


def _restriction(node) -> str | None:
    """The statically visible restrictions of the operator table, for the ops T5 graphs use."""
    if node.op_type == "LayerNormalization" and len([o for o in node.output if o]) > 1:
        return "LayerNormalization with more than its first output Y"
    if node.op_type == "ScatterND":
        reduction = next((a.s.decode() for a in node.attribute if a.name == "reduction"), "none")
        if reduction != "none":
            return f"ScatterND with reduction '{reduction}'"
    return None


def check_graph(path: Path, ranges: ShapeRanges, version: str) -> list[str]:
    """The problems of one graph (empty when TensorRT `version` should take it), one line each."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    listed = operator_lists()["versions"][version]
    supported = set(listed["supported"])
    low, high = listed["opset"]
    name = Path(path).name
    problems = []
    for opset in model.opset_import:
        if opset.domain in DEFAULT_DOMAINS and not low <= opset.version <= high:
            problems.append(f"{name}: opset {opset.version} is outside TensorRT {version}'s range {low}-{high}")
    unsupported: dict[str, int] = {}
    for node in _nodes(model.graph):
        if node.domain not in DEFAULT_DOMAINS:
            op = f"{node.domain}.{node.op_type}"
        elif node.op_type == "If":
            op = "If"
        elif node.op_type not in supported:
            op = node.op_type
        else:
            restricted = _restriction(node)
            if restricted:
                problems.append(f"{name}: {restricted} (node {node.name or '?'}) is not supported by TensorRT")
            continue
        unsupported[op] = unsupported.get(op, 0) + 1
    for op, count in sorted(unsupported.items()):
        why = ("an If node (conditional graph) cannot go into an engine: export the decoders separately"
               if op == "If" else f"operator {op} is not in TensorRT {version}'s supported ONNX operators")
        problems.append(f"{name}: {why} ({count} node{'s' if count > 1 else ''})")
    for value in model.graph.input:
        dtype = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower()
        if dtype not in ENGINE_IO_DTYPES:
            problems.append(f"{name}: input {value.name} is {dtype}, which a TensorRT engine cannot take")
        shape = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        try:
            input_profile(shape, ranges, f"{name}: input {value.name}")
        except UserError as error:
            problems.append(str(error))
    return problems


def check_export(folder: Path, ranges: ShapeRanges, tensorrt_version: str | None = None) -> dict:
    """The compatibility report of every `*.onnx` graph in `folder`; `generate_model.onnx` (the whole
    loop in ONNX Runtime's BeamSearch operator) is skipped, named with the reason: engines are built
    from the separate graphs."""
    version = target_version(tensorrt_version)
    graphs = [path for path in sorted(Path(folder).glob("*.onnx")) if path.name != GENERATE_MODEL_GRAPH]
    if not graphs:
        raise UserError(f"{folder} holds no .onnx graph: run `hyperexport export --task <task> --format onnx`")
    problems = {path.name: check_graph(path, ranges, version) for path in graphs}
    listed = operator_lists()["versions"][version]
    skipped = {GENERATE_MODEL_GRAPH: SKIPPED_GENERATE_GRAPH} if (Path(folder) / GENERATE_MODEL_GRAPH).is_file() else {}
    return {"tensorrt_operator_list": version, "source": listed["source"], "opset_range": listed["opset"],
            "profile_ranges": ranges.as_dict(), "graphs": problems, "skipped": skipped,
            "passed": not any(problems.values())}


def require_compatible(folder: Path, ranges: ShapeRanges, tensorrt_version: str | None = None) -> dict:
    """`check_export`, raising a one-line UserError naming the first problem (and how many there are)."""
    report = check_export(folder, ranges, tensorrt_version)
    found = [problem for problems in report["graphs"].values() for problem in problems]
    if found:
        more = f" (and {len(found) - 1} more problem{'s' if len(found) > 2 else ''})" if len(found) > 1 else ""
        raise UserError(f"not TensorRT-compatible: {found[0]}{more}")
    return report


def export_compatibility(export: ExportFolder) -> dict:
    """`check_export` for an export folder: an engine folder's source graphs against its own TensorRT
    version and profiles, an ONNX export's graphs against the newest list and the default profiles."""
    manifest = export.manifest
    if export.is_engine and manifest.profile_ranges is not None:
        batch, seq = (":".join(map(str, manifest.profile_ranges[key])) for key in ("batch", "seq"))
        return check_export(export.source_dir, ShapeRanges.from_flags(batch, seq), manifest.tensorrt_version)
    return check_export(export.path, ShapeRanges.from_flags())
