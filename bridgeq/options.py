"""URL options, declared once per backend as a dataclass and read from the query string.

Each field is an option: its type, its default and a one-line doc in
``field(metadata={"doc": ...})``. The parser, ``bridgeq check``, the CLI help and
the "valid options are ..." message all read that one declaration.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from bridgeq.errors import ConfigError

OptionsT = TypeVar("OptionsT")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def option(default: Any, doc: str) -> Any:
    """Declare one URL option with its default and a one-line doc."""
    return dataclasses.field(default=default, metadata={"doc": doc})


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A backend that takes no URL options."""


def describe(options_type: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, doc) for each option of ``options_type``."""
    hints = typing.get_type_hints(options_type)
    return [
        (f.name, _type_name(hints[f.name]), repr(f.default), f.metadata.get("doc", ""))
        for f in dataclasses.fields(options_type)
    ]


def parse_options(options_type: type[OptionsT], query: Mapping[str, str], scheme: str) -> OptionsT:
    """An ``options_type`` from the URL's query; unknown names and bad values are ConfigErrors."""
    hints = typing.get_type_hints(options_type)
    fields = {f.name: f for f in dataclasses.fields(options_type)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for name, text in query.items():
        if name not in fields:
            valid = ", ".join(sorted(fields)) or "none"
            near = difflib.get_close_matches(name, fields, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"unknown option {name!r} for {scheme}:// URLs{hint}; valid options: {valid}")
        values[name] = _convert(name, text, hints[name])
    try:
        return options_type(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {scheme}:// option: {exc}") from None


def _convert(name: str, text: str, hint: Any) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        if text == "" or text.lower() == "none":
            return None
        return _convert(name, text, inner[0])
    if typing.get_origin(hint) is Literal:
        if text not in args:
            raise ConfigError(f"option {name!r} must be one of {', '.join(map(str, args))}; got {text[:40]!r}")
        return text
    if hint is bool:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"option {name!r} must be true or false; got {text[:40]!r}")
    if hint in (int, float):
        try:
            value = hint(text)
        except ValueError:
            raise ConfigError(f"option {name!r} must be a {hint.__name__}; got {text[:40]!r}") from None
        if value < 0 or not math.isfinite(value):
            raise ConfigError(f"option {name!r} must be a finite number, not negative; got {text[:40]!r}")
        return value
    return text


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "|".join(map(str, typing.get_args(hint)))
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:
        return _type_name(args[0]) + "?"
    return getattr(hint, "__name__", str(hint))
