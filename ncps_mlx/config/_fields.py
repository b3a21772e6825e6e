"""The generic checks of a config's values: types, ranges, choices and unknown keys."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.util
import inspect
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

# -- checking single values -----------------------------------------------------------


class Problems(list):
    """The problems found so far, each ``where: what; fix``."""

    def add(self, where: str, what: str, fix: str = "") -> None:
        self.append(f"{where}: {what}" + (f"; {fix}" if fix else ""))


KIND_NAMES = {
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


def bounds_text(bounds: dict[str, float]) -> str:
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
    text = " or ".join(KIND_NAMES[kind] for kind in kinds)
    return f"{text} {bounds_text(bounds)}" if bounds else text


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
        if choices is not None and isinstance(value, list):
            return self._known_items(key, value, choices)
        if choices is not None and isinstance(value, str) and value not in choices:
            self.problems.add(self.at(key), f"got {value!r}", choose(value, choices))
            return default
        if bounds and not isinstance(value, (str, dict, list)) and not _in_bounds(value, bounds):
            self.problems.add(
                self.at(key), f"got {value!r}", f"use {_expected(kinds, None, bounds)}"
            )
            return default
        return value

    def _known_items(self, key: str, items: list, choices: tuple) -> list:
        """The items of a list that are among ``choices``; each other one is a problem."""
        for item in items:
            if item not in choices:
                self.problems.add(
                    self.at(key), f"got {item!r}", choose(item, choices, "choose each from")
                )
        return [item for item in items if item in choices]

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


def hint_kind(hint: Any) -> tuple[str, tuple | None, bool]:
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
            return (*hint_kind(members[0])[:2], nullable)
        return "any", None, nullable
    if origin in (tuple, list) and args in ((str, ...), (str,)):
        return "list[str]", None, False
    if hint is dict or origin is dict:
        return "table", None, False
    kinds = {bool: "bool", int: "int", float: "number", str: "str", Path: "str"}
    return kinds.get(hint, "any"), None, False


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
        kind, options, nullable = hint_kind(hints.get(name))
        options = (choices or {}).get(name, options)
        if nullable and options is not None:
            options = (*options, "none")
        required = param.default is param.empty and name not in optional
        value = table.get(name, kind, _MISSING, required=required, choices=options)
        if value is not _MISSING:
            args[name] = None if nullable and value == "none" else value
    return args


# -- reading a table into a dataclass --------------------------------------------------

_OPTION = "ncps_mlx.config.option"  # the key of an Option in a field's metadata


@dataclasses.dataclass(frozen=True)
class Option:
    """What a config key accepts; `option` stores it in a dataclass field."""

    doc: str = ""
    choices: tuple | None = None
    bounds: Mapping[str, float] = dataclasses.field(default_factory=dict)
    required: bool = False
    # The default in words, where the data decides it (the field's default is then None).
    default_doc: str | None = None
    # (selector key, the selector's values that take this key), e.g. momentum needs sgd.
    used_with: tuple[str, tuple[str, ...]] | None = None
    # A string given instead of the table stands for {shorthand: string}.
    shorthand: str | None = None
    # The class that checks the value itself; the config reports what it finds.
    checked_by: str | None = None
    # A section of the file, read on its own once the sections it depends on are read.
    section: bool = False


def option(
    default: Any = None,
    *,
    doc: str,
    choices: Iterable | None = None,
    required: bool = False,
    default_doc: str | None = None,
    used_with: tuple[str, tuple[str, ...]] | None = None,
    shorthand: str | None = None,
    checked_by: str | None = None,
    **bounds: float,
) -> Any:
    """A dataclass field that is a config key; ``bounds`` are ``min``, ``gt``, ``max``, ``lt``.

    Its type is the field's annotation. A list or dict default is copied per instance.
    """
    meta = Option(
        doc=doc,
        choices=tuple(choices) if choices is not None else None,
        bounds=bounds,
        required=required,
        default_doc=default_doc,
        used_with=used_with,
        shorthand=shorthand,
        checked_by=checked_by,
    )
    metadata = {_OPTION: meta}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(*, doc: str, required: bool = True, default_doc: str | None = None) -> Any:
    """A field that is a whole table of the file (``[data]``), read by its own validator."""
    meta = Option(doc, required=required, default_doc=default_doc, section=True)
    return dataclasses.field(kw_only=True, metadata={_OPTION: meta})


def derived(**kwargs: Any) -> Any:
    """A field the config computes (e.g. from the data): no key, skipped when reading."""
    return dataclasses.field(kw_only=True, **kwargs)


def keys_of(cls: type) -> list[tuple[dataclasses.Field, Option]]:
    """The fields of dataclass ``cls`` that are config keys, with their options."""
    fields = dataclasses.fields(cls)
    return [(field, field.metadata[_OPTION]) for field in fields if _OPTION in field.metadata]


def default_of(field: dataclasses.Field) -> Any:
    """The field's default (a fresh copy of a list or dict), or None if it has none."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def unwrap_optional(hint: Any) -> Any:
    """``X`` of ``X | None``; any other hint as it is."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return hint


def read_fields(table: Table, cls: type, *, finish: bool = True) -> dict[str, Any]:
    """Read the keys of dataclass ``cls`` from ``table``, checking each as its field says.

    The type comes from the annotation, the default, choices and bounds from the field's
    `Option`. A missing key, or one with a problem, gets the field's default; a
    field holding a dataclass is read from a sub-table into an instance of it. Keys the
    chosen variant does not take (``used_with``) are problems; with ``finish``, so is every
    key ``cls`` does not have.

    Returns:
        ``key -> value`` for every key of ``cls``; a section is its raw table (or None).
    """
    hints = typing.get_type_hints(cls)
    values = {
        field.name: _read_key(table, field, meta, hints[field.name]) for field, meta in keys_of(cls)
    }
    if finish:
        table.finish()
    _check_used_with(table, cls, values)
    return values


def _read_key(table: Table, field: dataclasses.Field, meta: Option, hint: Any) -> Any:
    if meta.section:
        return table.get(field.name, "table", None, required=meta.required)
    hint = unwrap_optional(hint)
    if dataclasses.is_dataclass(hint):
        return _read_nested(table, field, meta, hint)
    value = table.get(
        field.name,
        hint_kind(hint)[0],
        default_of(field),
        required=meta.required,
        choices=meta.choices,
        **meta.bounds,
    )
    return tuple(value) if isinstance(value, list) and typing.get_origin(hint) is tuple else value


def _read_nested(table: Table, field: dataclasses.Field, meta: Option, cls: type) -> Any:
    """A sub-table into an instance of ``cls``; a string stands for its shorthand key."""
    kinds, choices = ("table",), None
    if meta.shorthand:
        kinds = ("str", "table")
        choices = next(sub.choices for f, sub in keys_of(cls) if f.name == meta.shorthand)
    raw = table.get(field.name, kinds, None, required=meta.required, choices=choices)
    if raw is None:
        return default_of(field)
    if isinstance(raw, str):
        raw = {meta.shorthand: raw}
    return cls(**read_fields(Table(table.at(field.name), raw, table.problems), cls))


def _check_used_with(table: Table, cls: type, values: dict[str, Any]) -> None:
    """A key the chosen variant does not take is a problem, e.g. momentum with adam."""
    options = {field.name: meta for field, meta in keys_of(cls)}
    for key, meta in options.items():
        if meta.used_with is None or not table.present(key):
            continue
        selector, takers = meta.used_with
        chosen = values[selector]
        given = table.raw.get(selector, _MISSING)
        if given != chosen and (given is not _MISSING or options[selector].required):
            continue  # the selector has a problem of its own: what it takes is unknown
        if chosen in takers:
            continue
        names = " or ".join(repr(name) for name in takers)
        table.problems.add(
            table.at(key),
            f"{_variant(table, selector, chosen)} does not take it",
            f"remove it, or use {selector} {names}",
        )


def _variant(table: Table, selector: str, chosen: Any) -> str:
    # "the 'adam' optimizer"; a variant chosen by a type key is named after its table:
    # "a 'step' schedule".
    if selector == "type":
        return f"a {chosen!r} {table.where.rsplit('.', 1)[-1]}"
    return f"the {chosen!r} {selector}"


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
