"""The tree keeps the shape the architecture promises: no import circle between the package's modules
(function-local imports count; imports only for type checkers do not), no file over 400 lines, and
every artifact file name spelled once, in `contracts/names.py`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "hyperexport"
CLI = Path(__file__).parents[2] / "cli"
MAX_LINES = 400
# file names of artifacts that only contracts/names.py may spell (as a whole string literal)
ARTIFACT_NAMES = ("manifest.json", "task.json", "io_spec.json", "config.json", "model.safetensors",
                  "adapters.safetensors", "parity_report.json", "deploy.json", "recipe.yaml", "metrics.json",
                  "classify_model.onnx", "encoder_model.onnx", "decoder_model.onnx", "config.pbtxt", "tasks.json",
                  "decoder_with_past_model.onnx", "generate_model.onnx", "graphs.onnx_data")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports at run time (module level or inside functions)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            found.update(name for name in submodules if name in known)
            if node.module in known and not submodules & known:
                found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := walk(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_the_import_graph_has_no_circle():
    found = modules()
    graph = {name: imported_modules(path, set(found)) - {name} for name, path in found.items()}
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}
    assert import_cycle(graph) is None, " -> ".join(import_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():  # the check above can fail
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("path", sorted([*PACKAGE.rglob("*.py"), *CLI.rglob("*.py")]), ids=lambda p: p.name)
def test_no_file_is_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_artifact_file_names_are_spelled_only_in_contracts_names():
    spelled = []
    for path in [*PACKAGE.rglob("*.py"), *CLI.rglob("*.py")]:
        if path == PACKAGE / "contracts" / "names.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in ARTIFACT_NAMES:
                spelled.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.value}")
    assert spelled == []
