"""Typed dataclasses as schemas, and the one function that checks JSON values against them.

A schema is a frozen dataclass whose annotations are the types a JSON document's keys must have
(``int``, ``float``, ``bool``, ``str``, ``list[X]``, ``dict[str, X]``, ``X | None``, a nested
schema, or ``Any``) and whose ``field(metadata=...)`` gives the range: ``bounds=(lo, hi)`` for
numbers, ``choices=(...)`` for strings, ``max_items`` / ``max_chars`` for lists and strings. A
field with a default may be absent. `parse` checks a value against a schema strictly (a bool is not
an int, an int is not a string, no value is converted) and returns the dataclass; keys the schema
does not name are ignored, as the file formats promise (writers may add keys).

Every problem is one `GatescopeError` naming the file, the field (as a path such as
``modules[0].hidden_size``) and what was expected, with the offending value shortened.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from functools import cache
from typing import Any, TypeVar

from gatescope.errors import GatescopeError, shown
from gatescope.validation.limits import MAX_NAME_CHARS

T = TypeVar("T")


def bounded(lo: float, hi: float, **kwargs: Any) -> Any:
    """A dataclass field holding a number in lo..hi."""
    return dataclasses.field(metadata={"bounds": (lo, hi)}, **kwargs)


def one_of(choices: tuple[str, ...], **kwargs: Any) -> Any:
    """A dataclass field holding one of ``choices``."""
    return dataclasses.field(metadata={"choices": choices}, **kwargs)


def sized(max_items: int | None = None, max_chars: int | None = None, **kwargs: Any) -> Any:
    """A dataclass field holding a list of at most ``max_items`` (of strings of at most ``max_chars``)."""
    return dataclasses.field(metadata={"max_items": max_items, "max_chars": max_chars}, **kwargs)


def invalid(where: str, field: str, expected: str, value: Any = dataclasses.MISSING) -> GatescopeError:
    """The one-line error: ``{where} '{field}' must be {expected}; got {value}``."""
    got = "" if value is dataclasses.MISSING else f"; got {shown(value)}"
    return GatescopeError(f"{where} {field!r} must be {expected}{got}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parse(cls: type[T], data: Any, where: str, prefix: str = "") -> T:
    """Check the JSON object ``data`` against the schema ``cls`` -> an instance of ``cls``.

    where: the file (and part of it) for messages, e.g. ``"run.safetensors: metadata"``.
    """
    if not isinstance(data, dict):
        if not prefix:
            raise GatescopeError(f"{where} must be a JSON object; got {shown(data)}")
        raise invalid(where, prefix, "a JSON object", data)
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        name = f"{prefix}.{f.name}" if prefix else f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise GatescopeError(f"{where} {name!r} is missing (it is required)")
            continue
        values[f.name] = _check(hints[f.name], data[f.name], where, name, f.metadata)
    return cls(**values)


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a JSON object"
    if dataclasses.is_dataclass(tp):
        return "a JSON object"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _check(tp: Any, value: Any, where: str, name: str, meta: typing.Mapping[str, Any]) -> Any:
    """``value`` if it has type ``tp`` (and meets ``meta``'s range), else a one-line error."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        kinds = [a for a in args if a is not type(None)]
        for alt in kinds:  # the first alternative whose JSON type matches decides
            if _matches(alt, value):
                return _check(alt, value, where, name, meta)
        raise invalid(where, name, _describe(tp), value)
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, where, name)
    if not _matches(tp, value):
        raise invalid(where, name, _expected(tp, meta), value)
    if origin is list:
        limit = meta.get("max_items")
        if limit is not None and len(value) > limit:
            raise invalid(where, name, f"a list of at most {limit} entries", f"{len(value)} entries")
        inner = {"max_chars": meta.get("max_chars")} if meta.get("max_chars") else {}
        return [_check(args[0], v, where, f"{name}[{i}]", inner) for i, v in enumerate(value)]
    if origin is dict:
        return {k: _check(args[1], v, where, f"{name}.{k}", {}) for k, v in value.items()}
    if tp in (int, float):
        lo, hi = meta.get("bounds", (-math.inf, math.inf))
        if not (math.isfinite(value) and lo <= value <= hi):
            raise invalid(where, name, _expected(tp, meta), value)
    if tp is str:
        if "choices" in meta and value not in meta["choices"]:
            raise invalid(where, name, _expected(tp, meta), value)
        limit = meta.get("max_chars") or MAX_NAME_CHARS
        if "choices" not in meta and meta.get("max_chars") and len(value) > limit:
            raise invalid(where, name, f"a string of at most {limit} characters", f"{len(value)} characters")
    return value


def _expected(tp: Any, meta: typing.Mapping[str, Any]) -> str:
    """What a field must be, with its range: "an integer from 1 to 64", "one of 'word', 'char'"."""
    if "choices" in meta:
        return f"one of {', '.join(map(repr, meta['choices']))}"
    if "bounds" in meta:
        lo, hi = meta["bounds"]
        return f"{_describe(tp)} from {lo} to {hi}"
    return ("a finite number" if tp is float else _describe(tp))


def _matches(tp: Any, value: Any) -> bool:
    """Whether ``value`` has the JSON type of ``tp`` (the contents of lists and objects aside)."""
    origin = typing.get_origin(tp) or tp
    if dataclasses.is_dataclass(tp) or origin is dict:
        return isinstance(value, dict)
    if origin is list:
        return isinstance(value, list)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return False
