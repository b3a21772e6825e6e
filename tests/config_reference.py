"""The key tables of the run-config guide (docs/run-configs.md), made from the schema.

The guide holds these tables verbatim and a test compares them, so the documentation
lists exactly the keys, defaults and bounds that validation checks. After changing the
schema, print the new tables with ``python -m tests.config_reference``.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from ncps_mlx.config._fields import (
    KIND_NAMES,
    Option,
    bounds_text,
    default_of,
    hint_kind,
    keys_of,
    unwrap_optional,
)
from ncps_mlx.config.resolved import (
    Config,
    DataConfig,
    EarlyStoppingConfig,
    ModelConfig,
    OutputConfig,
    ScheduleConfig,
    TrainingConfig,
)

# Each table of the file, as the guide names it, and the dataclass declaring its keys.
SECTIONS: dict[str, type] = {
    "top level": Config,
    "[data]": DataConfig,
    "[model]": ModelConfig,
    "[training]": TrainingConfig,
    "[training.schedule]": ScheduleConfig,
    "[training.early_stopping]": EarlyStoppingConfig,
    "[output]": OutputConfig,
}


def key_table(cls: type) -> str:
    """A Markdown table of the keys of dataclass ``cls``: type, default, allowed, meaning."""
    hints = typing.get_type_hints(cls)
    rows = ["| key | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    for field, meta in keys_of(cls):
        cells = (
            f"`{field.name}`",
            _type_text(hints[field.name], meta),
            _default_text(field, meta),
            _allowed_text(meta),
            meta.doc,
        )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def key_tables() -> str:
    """Every section's table under its name, as the guide lists them."""
    return "\n\n".join(f"{name}:\n\n{key_table(cls)}" for name, cls in SECTIONS.items())


def _type_text(hint: Any, meta: Option) -> str:
    hint = unwrap_optional(hint)
    if meta.section or dataclasses.is_dataclass(hint):
        return "a string or a table" if meta.shorthand else "a table"
    return KIND_NAMES[hint_kind(hint)[0]]


def _default_text(field: dataclasses.Field, meta: Option) -> str:
    if meta.required:
        return "required"
    if meta.default_doc is not None:
        return meta.default_doc
    default = default_of(field)
    if default is None:
        return "-"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{default!r}`".replace("'", '"')


def _allowed_text(meta: Option) -> str:
    parts = []
    if meta.choices is not None:
        parts.append(", ".join(f"`{choice}`" for choice in meta.choices))
    if meta.bounds:
        parts.append(bounds_text(dict(meta.bounds)))
    if meta.used_with is not None:
        selector, takers = meta.used_with
        parts.append(f"only with {selector} " + " or ".join(f"`{name}`" for name in takers))
    if meta.checked_by is not None:
        parts.append(f"checked by `{meta.checked_by}`")
    return "; ".join(parts) or "-"


if __name__ == "__main__":
    print(key_tables())
