"""The generic checks of a config's values: types, ranges, choices and unknown keys."""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# -- checking single values -----------------------------------------------------------


class Problems(list):
    """The problems found so far, each ``where: what; fix``."""

    def add(self, where: str, what: str, fix: str = "") -> None:
        self.append(f"{where}: {what}" + (f"; {fix}" if fix else ""))


_KIND_NAMES = {
    "int": "an int",
    "number": "a number",
    "bool": "true or false",
    "str": "a string",
    "table": "a table",
    "list[str]": "a list of strings",
    "any": "a value",
}


def _is_kind(value: Any, kind: str) -> bool:
    # TOML's booleans are Python bools, which are ints: never let one pass as a number.
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    checks = {
        "int": number and isinstance(value, int),
        "number": number,
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "table": isinstance(value, dict),
        "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "any": True,
    }
    return checks[kind]


def _show(value: Any) -> str:
    """A value as the user wrote it, with its TOML type."""
    names = {bool: "a boolean", int: "an int", float: "a float", str: "a string"}
    names.update({dict: "a table", list: "an array"})
    shown = str(value).lower() if isinstance(value, bool) else repr(value)
    if isinstance(value, dict):
        shown = "{...}"
    return f"{shown} ({names.get(type(value), type(value).__name__)})"


def _bounds_text(bounds: dict[str, float]) -> str:
    low = [f">= {bounds['min']}"] if "min" in bounds else []
    low += [f"> {bounds['gt']}"] if "gt" in bounds else []
    high = [f"<= {bounds['max']}"] if "max" in bounds else []
    high += [f"< {bounds['lt']}"] if "lt" in bounds else []
    if low and high:
        left = f"[{bounds['min']}" if "min" in bounds else f"({bounds['gt']}"
        right = f"{bounds['max']}]" if "max" in bounds else f"{bounds['lt']})"
        return f"in {left}, {right}"
    return " ".join(low + high)


def _in_bounds(value: float, bounds: dict[str, float]) -> bool:
    if not math.isfinite(value):
        return False
    tests = {
        "min": lambda b: value >= b,
        "gt": lambda b: value > b,
        "max": lambda b: value <= b,
        "lt": lambda b: value < b,
    }
    return all(tests[name](bound) for name, bound in bounds.items())


def _expected(kinds: tuple[str, ...], choices: Iterable | None, bounds: dict) -> str:
    if choices is not None:
        return "one of " + ", ".join(str(choice) for choice in choices)
    text = " or ".join(_KIND_NAMES[kind] for kind in kinds)
    return f"{text} {_bounds_text(bounds)}" if bounds else text


def _closest(value: str, choices: Iterable[str]) -> str | None:
    """The choice a typo most likely meant, ignoring case."""
    by_lower = {str(choice).lower(): str(choice) for choice in choices}
    match = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None


def choose(value: str, choices: Iterable[Any], listing: str = "choose one of") -> str:
    choices = [str(choice) for choice in choices]
    match = _closest(value, choices)
    hint = f"did you mean {match!r}? " if match else ""
    return f"{hint}{listing} {', '.join(choices)}"


class Table:
    """One TOML table under validation: typed reads; keys never read are unknown."""

    def __init__(self, where: str, raw: Any, problems: Problems):
        self.where = where
        self.raw = raw if isinstance(raw, dict) else {}
        self.problems = problems
        self.known: list[str] = []

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(
        self,
        key: str,
        kind: str | tuple[str, ...],
        default: Any = None,
        *,
        required: bool = False,
        choices: Iterable | None = None,
        **bounds: float,
    ) -> Any:
        """The value at ``key``, or ``default`` when it is missing or has a problem."""
        self.known.append(key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        choices = tuple(choices) if choices is not None else None
        if key not in self.raw:
            if required:
                section = kinds == ("table",)
                fix = f"add a [{self.at(key)}] table" if section else f"add {key} = ..."
                self.problems.add(
                    self.at(key), "missing", f"{fix} ({_expected(kinds, choices, bounds)})"
                )
            return default
        value = self.raw[key]
        if not any(_is_kind(value, kind) for kind in kinds):
            self.problems.add(
                self.at(key), f"got {_show(value)}", f"use {_expected(kinds, None, bounds)}"
            )
            return default
        if choices is not None and isinstance(value, str) and value not in choices:
            self.problems.add(self.at(key), f"got {value!r}", choose(value, choices))
            return default
        if bounds and not isinstance(value, (str, dict, list)) and not _in_bounds(value, bounds):
            self.problems.add(
                self.at(key), f"got {value!r}", f"use {_expected(kinds, None, bounds)}"
            )
            return default
        return value

    def present(self, key: str) -> bool:
        return key in self.raw

    def accept_any(self) -> None:
        """Take every key as known: without a valid type, which keys are allowed is unknown,
        so none is reported on top of the bad type."""
        self.known.extend(self.raw)

    def finish(self) -> None:
        """Report every key that no read asked for."""
        allowed = list(dict.fromkeys(self.known))
        for key in self.raw:
            if key not in allowed:
                fix = choose(key, allowed, "allowed keys:")
                self.problems.add(self.at(key), "unknown key", fix)


# -- checking arguments against a signature -------------------------------------------

_MISSING = object()


def _hint_kind(hint: Any) -> tuple[str, tuple | None, bool]:
    """``(kind, choices, nullable)`` of a type hint; kind ``"any"`` when not checkable."""
    if hint is None:
        return "any", None, False
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "str", args, False
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in args if arg is not type(None)]
        nullable = len(members) < len(args)
        if len(members) == 1:
            return (*_hint_kind(members[0])[:2], nullable)
        return "any", None, nullable
    return {bool: "bool", int: "int", float: "number", str: "str"}.get(hint, "any"), None, False


def signature_args(
    table: Table,
    fn: Callable,
    *,
    skip: Iterable[str] = (),
    optional: Iterable[str] = (),
    choices: Mapping[str, tuple] | None = None,
) -> dict[str, Any]:
    """Read ``fn``'s keyword arguments from ``table``, typed by its annotations.

    Arguments without a default are required unless in ``optional``; a Literal argument
    that also takes ``None`` accepts the string ``"none"`` for it (TOML has no null).
    """
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an unresolvable annotation: fall back to no type checks
        hints = {}
    args = {}
    for name, param in inspect.signature(fn).parameters.items():
        if name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        kind, options, nullable = _hint_kind(hints.get(name))
        options = (choices or {}).get(name, options)
        if nullable and options is not None:
            options = (*options, "none")
        required = param.default is param.empty and name not in optional
        value = table.get(name, kind, _MISSING, required=required, choices=options)
        if value is not _MISSING:
            args[name] = None if nullable and value == "none" else value
    return args


def blame(where: str, message: str, keys: Iterable[str]) -> str:
    """The most specific ``where.key`` a constructor's error message names."""
    for key in sorted(keys, key=len, reverse=True):
        if re.search(rf"\b{re.escape(key)}\b", message):
            return f"{where}.{key}"
    return where


def importable(name: str) -> bool:
    # find_spec looks without importing (coremltools takes seconds and prints warnings);
    # a None entry in sys.modules is how a module is blocked, e.g. by tests.
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
