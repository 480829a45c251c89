"""Declarative JSON codecs for the frozen dataclasses: one `Codec` per record type.

A codec is declared by its class and how its wire form differs (renamed keys, a type
tag, the text of decimals and times); `encode`/`decode` are compiled once from the
class's fields and type hints, like `dataclasses` builds `__init__`, so they cost what
hand-written dict builders cost. Field types: `str`, `int`, `bool`, `float`, `Decimal`,
`datetime`, `X | None`, `tuple[str, ...]`, `tuple[tuple[str, str], ...]`, and a
dataclass or a union of dataclasses with a codec of its own (`nested`, keyed by the
type), or a tuple of those.

A key missing from the input takes the field's default (records written before the
field existed); without a default it is an error (`KeyError`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Obj = dict[str, Any]


def _same(x: Any) -> Any:
    return x


def _pairs(x: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in x)


class Codec(Generic[T]):
    """`encode(value) -> dict` and `decode(dict) -> value` for dataclass `cls`."""

    def __init__(
        self,
        cls: type[T],
        *,
        tag: tuple[str, str] | None = None,
        rename: Mapping[str, str] | None = None,
        decimal: Callable[[Decimal], str] = str,
        time: Callable[[datetime], Any] = _same,
        nested: Mapping[Any, Codec[Any] | Tagged] | None = None,
    ) -> None:
        self.cls = cls
        self.tag = tag
        env: dict[str, Any] = {
            "cls": cls,
            "Decimal": Decimal,
            "fromiso": datetime.fromisoformat,
            "dec": decimal,
            "time": time,
            "pairs": _pairs,
        }
        hints = typing.get_type_hints(cls)
        rename = rename or {}
        out: list[str] = [] if tag is None else [f"{tag[0]!r}: {tag[1]!r}"]
        args: list[str] = []
        for i, f in enumerate(dataclasses.fields(cls)):  # type: ignore[arg-type]
            key = rename.get(f.name, f.name)
            enc, dec_ = _converters(hints[f.name], nested or {}, env, f"n{i}")
            out.append(f"{key!r}: {enc.format(f'x.{f.name}')}")
            got = dec_.format(f"o[{key!r}]")
            if f.default is not dataclasses.MISSING:
                env[f"d{i}"] = f.default
                got = f"({got} if {key!r} in o else d{i})"
            args.append(f"{f.name}={got}")
        source = (
            "def encode(x):\n    return {" + ", ".join(out) + "}\n"
            "def decode(o):\n    return cls(" + ", ".join(args) + ")\n"
        )
        exec(compile(source, f"<codec {cls.__name__}>", "exec"), env)
        self.encode: Callable[[T], Obj] = env["encode"]
        self.decode: Callable[[Mapping[str, Any]], T] = env["decode"]


class Tagged:
    """A union of dataclasses told apart by the tag each member's codec writes."""

    def __init__(self, *codecs: Codec[Any]) -> None:
        keys = {c.tag[0] for c in codecs if c.tag is not None}
        if len(keys) != 1 or any(c.tag is None for c in codecs):
            raise ValueError("every member needs a tag under the same key")
        self.key = keys.pop()
        self._by_type = {c.cls: c.encode for c in codecs}
        self._by_tag = {c.tag[1]: c.decode for c in codecs if c.tag is not None}

    def encode(self, value: Any) -> Obj:
        encode = self._by_type.get(type(value))
        if encode is None:
            raise TypeError(f"no codec for {type(value).__name__}")
        return encode(value)

    def decode(self, o: Mapping[str, Any]) -> Any:
        decode = self._by_tag.get(o.get(self.key))  # type: ignore[arg-type]
        if decode is None:
            raise ValueError(f"unknown {self.key} {o.get(self.key)!r}")
        return decode(o)


def _converters(
    hint: Any, nested: Mapping[Any, Codec[Any] | Tagged], env: dict[str, Any], name: str
) -> tuple[str, str]:
    """Expression templates (`{}` is the value) that encode and decode one field."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        enc, dec = _converters(inner, nested, env, name)
        return f"(None if {{0}} is None else {enc.format('{0}')})", (
            f"(None if {{0}} is None else {dec.format('{0}')})"
        )
    if hint in (str, int, bool):
        return "{0}", "{0}"
    if hint is float:
        return "{0}", "float({0})"  # seconds (after_seconds); money is never a float field
    if hint is Decimal:
        return "dec({0})", "Decimal({0})"
    if hint is datetime:
        return "time({0})", "fromiso({0})"
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = args[0]
        if item is str:
            return "{0}", "tuple({0})"
        if typing.get_origin(item) is tuple:
            return "{0}", "pairs({0})"
        codec = _nested(item, nested)
        env[f"{name}e"], env[f"{name}d"] = codec.encode, codec.decode
        return f"[{name}e(v) for v in {{0}}]", f"tuple({name}d(v) for v in {{0}})"
    codec = _nested(hint, nested)
    env[f"{name}e"], env[f"{name}d"] = codec.encode, codec.decode
    return f"{name}e({{0}})", f"{name}d({{0}})"


def _nested(hint: Any, nested: Mapping[Any, Codec[Any] | Tagged]) -> Codec[Any] | Tagged:
    codec = nested.get(hint)
    if codec is None:
        raise TypeError(f"no codec for field type {hint!r}: pass it in `nested`")
    return codec
