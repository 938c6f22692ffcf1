"""How a config section is read: typed fields with their documentation and bounds, and the checks that turn a JSON
object into a record, naming the JSON path of every wrong key, type or value."""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, TypeVar, Union

from unet3d.errors import ConfigError
from unet3d.registry import suggest

T = TypeVar("T")


def doc(text: str, default: Any = MISSING, *, minimum: float | None = None, **extra: Any) -> Any:
    """A dataclass field with its documentation (and an optional lower bound) attached."""
    metadata = {"doc": text, "minimum": minimum, **extra}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class NamedSpec:
    """A class chosen by name (`name`) plus the keyword arguments for its constructor (every other key)."""

    name: str
    kwargs: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **self.kwargs}


def type_name(tp: Any) -> str:
    """A type annotation as the config reference and the error messages spell it: 'an integer or null'."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict:
        return "an object"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string", type(None): "null"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if tp is NamedSpec:
        return isinstance(value, dict)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def key_path(where: str, key: str) -> str:
    """The JSON path of `key` inside `where` ('' for the top of a file)."""
    return f"{where}.{key}" if where else key


def non_finite(value: Any, where: str) -> list[str]:
    """One line per NaN or ±Infinity anywhere in a JSON value (Python's json module reads them; no bound check sees
    them), naming its JSON path."""
    if isinstance(value, float) and not math.isfinite(value):
        spelled = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return [f"{where}: {spelled} is not a finite number; give a finite value"]
    if isinstance(value, dict):
        return [line for key, item in value.items() for line in non_finite(item, key_path(where, key))]
    if isinstance(value, list):
        return [line for index, item in enumerate(value) for line in non_finite(item, f"{where}[{index}]")]
    return []


def refuse_non_finite(value: Any, where: str) -> None:
    """A ConfigError listing every NaN or ±Infinity in a JSON value (see `non_finite`)."""
    lines = non_finite(value, where)
    if lines:
        raise ConfigError("\n".join(lines))


class Problems:
    """Collects the ConfigErrors of independent checks, so that one run reports every problem of a config, each on
    its own line with its JSON path, instead of the first one only."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def run(self, check: Callable[..., T], *args: Any) -> T | None:
        """`check(*args)`, or None (and its message noted) when it raises a ConfigError."""
        try:
            return check(*args)
        except ConfigError as error:
            self.lines.extend(str(error).splitlines())
            return None

    def add(self, line: str) -> None:
        self.lines.append(line)

    def raise_any(self) -> None:
        if self.lines:  # two checks that meet the same wrong value say it once
            raise ConfigError("\n".join(dict.fromkeys(self.lines)))


def parse_named(value: Any, where: str) -> NamedSpec:
    """`{"name": ..., **kwargs}` → NamedSpec; the name itself is checked later against the registry."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected an object with a 'name', got {type(value).__name__}")
    if "name" not in value:
        raise ConfigError(f"{where}: missing 'name'")
    if not isinstance(value["name"], str):
        raise ConfigError(f"{where}.name: expected a string, got {value['name']!r}")
    return NamedSpec(value["name"], {k: v for k, v in value.items() if k != "name"})


def _check_bounds(value: Any, meta: typing.Mapping[str, Any], where: str) -> None:
    values = value if isinstance(value, list) else [value]
    minimum, maximum = meta.get("minimum"), meta.get("maximum")
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if minimum is not None and v < minimum:
            raise ConfigError(f"{where}: must be at least {minimum}, got {value!r}")
        if maximum is not None and v > maximum:
            raise ConfigError(f"{where}: must be at most {maximum}, got {value!r}")
    pattern = meta.get("pattern")
    for v in values if pattern else []:
        if isinstance(v, str) and not re.fullmatch(pattern, v):
            expect = meta.get("expect") or f"the pattern {pattern}"
            raise ConfigError(f"{where}: {v!r} is refused: it goes into a shell script; expected {expect}")
    choices = meta.get("choices")
    if choices and value not in choices:
        allowed = ", ".join(map(repr, choices))
        raise ConfigError(f"{where}: must be one of {allowed}, got {value!r}{suggest(str(value), map(str, choices))}")


def parse_section(record: type, data: Any, where: str) -> Any:
    """Build `record` from a JSON object, checking keys, types and bounds; one ConfigError lists every problem of the
    section, each with its JSON path below `where` (the top of a file when `where` is '')."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(record)
    known = {f.name: f for f in fields(record)}
    problems = Problems()
    for key in data:
        if key not in known:
            problems.add(f"{key_path(where, key)}: unknown key{suggest(key, known)}")
    values = {}
    for name, f in known.items():
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                problems.add(f"{key_path(where, name)}: required")
            continue
        value, tp, path = data[name], hints[name], key_path(where, name)
        if not _matches(value, tp):
            problems.add(f"{path}: expected {type_name(tp)}, got {value!r}")
            continue
        problems.run(_check_bounds, value, f.metadata, path)
        if typing.get_args(tp) and typing.get_args(tp)[0] is NamedSpec:
            value = [problems.run(parse_named, v, f"{path}[{i}]") for i, v in enumerate(value)]
        values[name] = value
    problems.raise_any()
    return record(**values)
