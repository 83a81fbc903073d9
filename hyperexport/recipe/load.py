"""Recipes are data: one YAML file into frozen, typed configs, with every problem reported at once.

The dataclasses of `recipe.schema` are the schema. A single generic validator walks their type hints (no code per
field), then a few semantic checks run on each object that came out whole. A recipe cannot run code:
the YAML loader is a `SafeLoader` (no `!!python` tags) and no field names an import path.

YAML follows 1.2 where 1.1 surprises: only true/false are booleans (a label `no` stays a string) and
`3e-4` is a number. Relative paths (task `path`, a `backbone.config` file, a `./`-style `pretrained` or
`tokenizer` folder) resolve against the recipe file's folder, so a loaded recipe holds absolute paths.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeGuard, Union, get_args, get_origin, get_type_hints

import yaml

from hyperexport.backbones import PRESETS
from hyperexport.contracts.fields import to_json
from hyperexport.data.demo import DEMO_GENERATORS
from hyperexport.errors import UserError
from hyperexport.recipe.schema import DEFAULT_RECIPE, BackboneConfig, ModelConfig, Recipe, TaskConfig
from hyperexport.tasks.registry import TASKS, custom_task

# Every number in the schema must be > 0, except these, which may also be 0.
_MAY_BE_ZERO = frozenset({"warmup_steps", "seed", "data_seed", "weight_decay", "label_smoothing"})
_FILE_SOURCES = ("glue_dir", "jsonl", "csv")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # names become folder names (runs, exports)
_BAD = object()  # marks a value that failed validation (its problem is already recorded)


# ---------------------------------------------------------------------------------------- loading


def load_recipe(path: str | Path | None = None) -> Recipe:
    """Read, validate and return the recipe at `path` (None: the packaged demo recipe)."""
    path = DEFAULT_RECIPE if path is None else Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise UserError(f"no recipe at {path}: pass a path to a YAML recipe (see recipes/)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read recipe {path}: {exc}") from None
    try:
        data, duplicates = _read_yaml(text)
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a bad explicit tag, as in `!!int x`
        raise UserError(f"recipe {path}: invalid YAML{_where(exc)}: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise UserError(f"recipe {path}: invalid YAML: nested too deeply") from None
    return _parse(data, path.resolve().parent, f"recipe {path}", duplicates)


def recipe_from_dict(data: Mapping, base_dir: Path | None = None) -> Recipe:
    """Validate a plain mapping (as YAML gives it); relative paths resolve against `base_dir` if given."""
    return _parse(data, base_dir, "recipe", [])


def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as plain dicts, lists and scalars (for `yaml.safe_dump`); `recipe_from_dict` inverts it."""
    return to_json(recipe)


def _parse(data: Any, base_dir: Path | None, label: str, problems: list[str]) -> Recipe:
    recipe = _convert(Recipe, data, "", problems)
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise UserError(f"{label} has {count}: {'; '.join(problems)}")
    return _resolve_paths(recipe, base_dir) if base_dir is not None else recipe


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader, YAML 1.2 style (true/false only, `3e-4` floats, no timestamps); notes duplicate keys."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in seen:
                self.duplicates.append(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep)


_BOOL, _FLOAT, _TIMESTAMP = (f"tag:yaml.org,2002:{name}" for name in ("bool", "float", "timestamp"))
_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_RecipeLoader.add_implicit_resolver(
    _FLOAT, re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _read_yaml(text: str) -> tuple[Any, list[str]]:
    """The YAML document in `text`, and its duplicate keys as problems."""
    loader = _RecipeLoader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    finally:
        loader.dispose()


def _where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _yaml_problem(exc: yaml.YAMLError) -> str:
    return getattr(exc, "problem", None) or str(exc)


# ------------------------------------------------------------------------------ generic validation


def _convert(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    """`value` as type `tp`, or `_BAD` after recording why not in `problems`."""
    origin, args = get_origin(tp), get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, path, problems)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]  # the schema only has `X | None`
        return _convert(inner, value, path, problems)
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        hint = _did_you_mean(value, args)
        return _problem(problems, f"{path}: expected one of {', '.join(args)}, got {_show(value)}{hint}")
    if origin is tuple:  # tuple[X, ...]
        if not isinstance(value, (list, tuple)):
            return _problem(problems, f"{path}: expected a list, got {_show(value)}")
        items = [_convert(args[0], item, f"{path}[{i}]", problems) for i, item in enumerate(value)]
        return _BAD if any(item is _BAD for item in items) else tuple(items)
    return _scalar(tp, value, path, problems)


def _scalar(tp: type, value: Any, path: str, problems: list[str]) -> Any:
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value if value.strip() else _problem(problems, f"{path}: must not be empty")
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            if math.isfinite(float(value)):
                return float(value)
        except OverflowError:
            pass
        return _problem(problems, f"{path}: expected a finite number, got {_show(value)}")
    if tp not in (bool, str, int, float):
        raise TypeError(f"recipe schema: unsupported type {tp!r} at {path}")
    expected = {bool: "true or false", str: "a string", int: "an integer", float: "a number"}[tp]
    scalar = value is not None and not isinstance(value, (Mapping, list, tuple, set))
    quote = " (quote it to make it a string)" if tp is str and scalar else ""
    return _problem(problems, f"{path}: expected {expected}, got {_show(value)}{quote}")


def _build(cls: type, value: Any, path: str, problems: list[str]) -> Any:
    """An instance of dataclass `cls` from a mapping; its semantic checks run if its fields are valid."""
    if not isinstance(value, Mapping):
        return _problem(problems, f"{path or 'top level'}: expected a mapping, got {_show(value)}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = [key for key in value if key not in fields]
    problems += [f"{_join(path, str(key))}: unknown key{_did_you_mean(key, fields)}" for key in unknown]
    hints, kwargs, whole = _hints(cls), {}, True
    for name, field in fields.items():
        sub = _join(path, name)
        if name not in value:
            if field.default is dataclasses.MISSING:
                problems.append(f"{sub}: missing (required)")
                whole = False
            continue
        converted = _convert(hints[name], value[name], sub, problems)
        if converted is _BAD or _out_of_range(name, converted, sub, problems):
            whole = False
        else:
            kwargs[name] = converted
    if not whole:
        return _BAD
    instance = cls(**kwargs)
    problems += _CHECKS.get(cls, _no_checks)(instance, path)
    return instance


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _out_of_range(name: str, value: Any, path: str, problems: list[str]) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    if name in _MAY_BE_ZERO and value < 0:
        problems.append(f"{path}: must be >= 0, got {value}")
    elif name not in _MAY_BE_ZERO and value <= 0:
        problems.append(f"{path}: must be > 0, got {value}")
    elif name == "label_smoothing" and value >= 1:
        problems.append(f"{path}: must be < 1, got {value}")
    else:
        return False
    return True


def _problem(problems: list[str], message: str) -> Any:
    problems.append(message)
    return _BAD


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _did_you_mean(value: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(value), [str(choice) for choice in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple, set)):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ------------------------------------------------------------------------------- semantic checks


def _check_recipe(recipe: Recipe, path: str) -> list[str]:
    problems = [] if _SAFE_NAME.fullmatch(recipe.name) else [f"name: {recipe.name!r} {_NAME_RULE}"]
    if not recipe.tasks:
        problems.append("tasks: at least one task is required")
    names = [task.name for task in recipe.tasks]
    repeated = sorted({name for name in names if names.count(name) > 1})
    problems += [f"tasks: {name!r} appears {names.count(name)} times" for name in repeated]
    return problems


_NAME_RULE = "is not a valid name (letters, digits and _ . + -, starting with a letter or digit)"


def _check_task(task: TaskConfig, path: str) -> list[str]:
    problems = [] if _SAFE_NAME.fullmatch(task.name) else [f"{path}.name: {task.name!r} {_NAME_RULE}"]
    if task.name in TASKS:
        given = [key for key in _CUSTOM_FIELDS if getattr(task, key) is not None]
        if given:
            problems.append(f"{path}: {task.name!r} is a built-in task, so {', '.join(given)} cannot "
                            "be set (give a custom task its own name)")
    else:
        problems += _check_custom_task(task, path)
    if task.source in _FILE_SOURCES and task.path is None:
        problems.append(f"{path}.path: required for source {task.source}")
    if task.source == "demo" and task.name not in DEMO_GENERATORS:
        problems.append(
            f"{path}.source: demo data exists only for {', '.join(DEMO_GENERATORS)}, not {task.name!r}"
        )
    return problems


def _check_custom_task(task: TaskConfig, path: str) -> list[str]:
    missing = [key for key in _CUSTOM_FIELDS if getattr(task, key) is None]
    if missing:
        return [f"{path}: {task.name!r} is not a built-in task{_did_you_mean(task.name, TASKS)}, and a "
                f"custom task must set template, labels and metric (missing: {', '.join(missing)})"]
    assert task.template is not None and task.labels is not None and task.metric is not None  # _CUSTOM_FIELDS
    problems = []
    if task.source not in ("jsonl", "csv"):
        problems.append(f"{path}.source: a custom task reads jsonl or csv files, not {task.source}")
    if len(set(task.labels)) < len(task.labels):
        problems.append(f"{path}.labels: must be distinct")
    try:
        custom_task(task.name, task.template, task.labels, task.metric, task.label_field)
    except UserError as exc:
        problems.append(f"{path}: {exc}")
    return problems


_CUSTOM_FIELDS = ("template", "labels", "metric")


def _check_backbone(backbone: BackboneConfig, path: str) -> list[str]:
    config = backbone.config
    if config in PRESETS or "/" in config or config.endswith(".json"):
        return []
    return [f"{path}.config: {config!r} is neither a preset{_did_you_mean(config, PRESETS)} nor a path "
            f"(presets: {', '.join(PRESETS)}, and a path ends with .json or contains a /)"]


def _check_model(model: ModelConfig, path: str) -> list[str]:
    if model.variant == "adapters" and model.task_projector_input_dim is not None:
        return [f"{path}.task_projector_input_dim: the adapters variant has no task embedding to project"]
    return []


def _no_checks(instance: Any, path: str) -> list[str]:
    return []


_CHECKS: dict[type, Callable[[Any, str], list[str]]] = {
    Recipe: _check_recipe, TaskConfig: _check_task, BackboneConfig: _check_backbone, ModelConfig: _check_model
}


def _resolve_paths(recipe: Recipe, base_dir: Path) -> Recipe:
    def resolve(value: str) -> str:
        return str((base_dir / Path(value).expanduser()).resolve())

    def local(value: str | None) -> TypeGuard[str]:
        return value is not None and value.startswith((".", "/", "~"))

    backbone = recipe.backbone
    backbone = dataclasses.replace(
        backbone,
        config=backbone.config if backbone.config in PRESETS else resolve(backbone.config),
        pretrained=resolve(backbone.pretrained) if local(backbone.pretrained) else backbone.pretrained,
        tokenizer=resolve(backbone.tokenizer) if local(backbone.tokenizer) else backbone.tokenizer,
    )
    tasks = tuple(
        # a file source's path is set (`_check_task` refused the recipe otherwise)
        dataclasses.replace(task, path=resolve(task.path)) if task.source in _FILE_SOURCES and task.path else task
        for task in recipe.tasks
    )
    return dataclasses.replace(recipe, backbone=backbone, tasks=tasks)
