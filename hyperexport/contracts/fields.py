"""Frozen dataclasses to and from JSON values, checked against their type hints.

The folder contracts (`run`, `task`, `export`, `deploy`) declare their files as dataclasses; these
two functions are the only place their JSON is taken apart. Unknown keys are ignored (a newer
writer may add facts), a missing key takes the field's default, and a value of the wrong kind is a
`ContractError` naming the field.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ContractError(ValueError):
    """A JSON value that does not fit the contract's dataclass (the message names the field)."""


def to_json(value: Any) -> Any:
    """A dataclass (nested ones, tuples and dicts too) as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: to_json(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    return value


def from_json(cls: type[T], data: Any, where: str = "") -> T:
    """An instance of dataclass `cls` from JSON `data`; a `ContractError` names the first misfit."""
    return _convert(cls, data, where or cls.__name__)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _convert(tp: Any, value: Any, where: str) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for candidate in inner[:-1]:
            try:
                return _convert(candidate, value, where)
            except ContractError:
                pass
        return _convert(inner[-1], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ContractError(f"{where} is {type(value).__name__}, not a list")
        item = args[0] if args else Any
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ContractError(f"{where} is {type(value).__name__}, not an object")
        item = args[1] if len(args) == 2 else Any
        return {key: _convert(item, v, f"{where}.{key}") for key, v in value.items()}
    if origin is typing.Literal:
        if value not in args:
            raise ContractError(f"{where} is {value!r}, not one of {', '.join(map(repr, args))}")
        return value
    return _scalar(tp, value, where)


def _scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise ContractError(f"{where} is {value!r}, not {getattr(tp, '__name__', tp)}")
    return value


def _build(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ContractError(f"{where} is {type(value).__name__}, not an object")
    hints, kwargs = _hints(cls), {}
    for field in dataclasses.fields(cls):
        if field.name in value:
            kwargs[field.name] = _convert(hints[field.name], value[field.name], f"{where}.{field.name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ContractError(f"{where} lacks {field.name}")
    return cls(**kwargs)
