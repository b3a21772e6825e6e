"""``[data]``: a generated task, a UEA set or an ``.npz`` file, and its split."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import datasets
from ._fields import Problems, Table, blame, read_fields, signature_args
from .build import GENERATORS
from .npz import check_npz_arrays, npz_classes, npz_headers
from .resolved import DATA_NAMES, DEFAULT_VALIDATION_FRACTION, DataConfig, DataInfo


def validate_data(table: Table, seed: int, base_dir: Path) -> DataConfig | None:
    """Check the `[data]` table and resolve it: the source, its options and the split.

    A generated task is drawn once at one sequence, a UEA set is loaded and an `.npz`
    file's headers are read, to learn the shapes without the cost of the whole data.

    Args:
        table: The `[data]` table; its problems are added to `table.problems`.
        seed: The run's seed, the default seed of a generated task.
        base_dir: The folder a relative `path` is read from.

    Returns:
        The resolved section with what the data looks like (`info`), or None when a
        problem keeps it from being resolved.
    """
    problems = table.problems
    keys = read_fields(table, DataConfig)
    name, path, options = keys["name"], keys["path"], keys["options"]
    validation, fraction = keys["validation"], keys["validation_fraction"]
    if table.present("name") and table.present("path"):
        problems.add("data.path", "both name and path are set", "keep one of them")
        return None
    if not table.present("name") and not table.present("path"):
        problems.add(
            "data.name",
            "missing",
            f"set name (one of {', '.join(DATA_NAMES)}) or path (an .npz file)",
        )
        return None
    if name in GENERATORS:
        return _generated_data(name, options, validation, fraction, seed, problems)
    if name is not None:
        return _uea_data(name, options, validation, fraction, problems)
    if path is not None:
        return _npz_data(Path(path), base_dir, options, validation, fraction, problems)
    return None


def _generated_data(
    name: str,
    options: dict,
    validation: str | None,
    fraction: float | None,
    seed: int,
    problems: Problems,
) -> DataConfig | None:
    if validation is not None:
        problems.add(
            "data.validation",
            "only for UEA sets",
            "use validation_fraction for generated data (0 turns validation off)",
        )
    generator = GENERATORS[name]
    args = _option_args(options, generator, problems)
    if args is None:
        return None
    args.setdefault("seed", seed)
    count = args.get(
        "num_sequences", inspect.signature(generator).parameters["num_sequences"].default
    )
    try:
        # One sequence shows the shapes and runs the generator's own argument checks.
        probe = generator(**{**args, "num_sequences": min(count, 1)})
    except ValueError as error:
        problems.add(blame("data.options", str(error), args), str(error))
        return None
    split = _held_out(count, fraction, problems)
    if split is None:
        return None
    sizes, mode, fraction = split
    info = _info(probe.x.shape, probe.y, None, sizes, probe.timespans, probe.mask)
    return DataConfig(name, None, args, mode, fraction, source="generated", info=info)


def _uea_data(
    name: str,
    options: dict,
    validation: str | None,
    fraction: float | None,
    problems: Problems,
) -> DataConfig | None:
    if fraction is not None:
        problems.add(
            "data.validation_fraction",
            "UEA sets are validated on their test split",
            'remove it and set validation = "test" or "none"',
        )
    args = _option_args(options, datasets.load_uea, problems, skip=("name",))
    if args is None:
        return None
    try:
        train, test = datasets.load_uea(name, **args)
    except ImportError:
        problems.add(
            "data.name",
            f"{name} is read with aeon, which is not installed",
            "pip install 'ncps-mlx[data]'",
        )
        return None
    except (ValueError, OSError) as error:
        problems.add("data.name", str(error))
        return None
    validation = validation or "test"
    sizes = (len(train), len(test) if validation == "test" else 0)
    info = _info(train.x.shape, train.y, len(train.classes), sizes, train.timespans, train.mask)
    return DataConfig(name, None, args, validation, 0.0, source="uea", info=info)


def _option_args(
    options: dict, fn: Callable, problems: Problems, *, skip: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """``data.options`` read as ``fn``'s keyword arguments; None if any has a problem."""
    before = len(problems)
    table = Table("data.options", options, problems)
    args = signature_args(table, fn, skip=skip)
    table.finish()
    return args if len(problems) == before else None


def _held_out(
    count: int, fraction: float | None, problems: Problems
) -> tuple[tuple[int, int], str, float] | None:
    """A random split of ``count`` sequences: ``(train, validation)`` counts, the validation
    mode and the fraction (defaulted); None if a part would be empty."""
    fraction = DEFAULT_VALIDATION_FRACTION if fraction is None else fraction
    val = round(count * fraction)
    if fraction > 0 and val == 0:
        problems.add(
            "data.validation_fraction",
            f"{fraction} of {count} sequences leaves no validation sequence",
            "raise it, or set 0 to train without validation",
        )
        return None
    if count - val < 1:
        problems.add(
            "data.validation_fraction",
            f"{fraction} of {count} sequences leaves no training sequence",
            "lower it",
        )
        return None
    return (count - val, val), ("fraction" if val else "none"), fraction


def _info(
    x_shape: tuple,
    y: Any,
    classes: int | None,
    sizes: tuple[int, int],
    timespans: Any,
    mask: Any,
) -> DataInfo:
    """Describe data from x's shape and y (an array or a ``(shape, dtype)`` pair)."""
    y_shape, y_dtype = (y.shape, y.dtype) if hasattr(y, "shape") else y
    labels = np.issubdtype(y_dtype, np.integer)
    per_step = len(y_shape) == 3 or (len(y_shape) == 2 and labels)
    if labels and classes is None:
        classes = int(np.max(y)) + 1
    return DataInfo(
        input_size=int(x_shape[2]),
        output_size=int(classes) if labels else int(y_shape[-1]),
        classification=bool(labels),
        per_step=per_step,
        seq_len=int(x_shape[1]),
        train_size=sizes[0],
        val_size=sizes[1],
        timespans=timespans is not None,
        mask=mask is not None,
    )


def _npz_data(
    path: Path,
    base_dir: Path,
    options: dict,
    validation: str | None,
    fraction: float | None,
    problems: Problems,
) -> DataConfig | None:
    if options:
        problems.add(
            "data.options",
            "only for generated tasks and UEA sets",
            "remove it: an .npz file is used as it is",
        )
    if validation is not None:
        problems.add(
            "data.validation",
            "only for UEA sets",
            "use validation_fraction, or val_x and val_y arrays in the file",
        )
    path = path.expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        problems.add(
            "data.path",
            f"no file at {str(path)!r}",
            "give an existing .npz file (relative to the config file's folder)",
        )
        return None
    headers = npz_headers(path, problems)
    if headers is None or not check_npz_arrays(headers, problems):
        return None
    has_val = "val_x" in headers
    if has_val and fraction is not None:
        problems.add(
            "data.validation_fraction",
            "the file has val_x and val_y arrays",
            "remove validation_fraction, or the val_* arrays",
        )
        return None
    classes = npz_classes(path, headers, problems)
    if classes is False:
        return None
    count = headers["x"][0][0]
    if has_val:
        split = (count, headers["val_x"][0][0]), "file", 0.0
    else:
        split = _held_out(count, fraction, problems)
    if split is None:
        return None
    sizes, mode, fraction = split
    info = _info(
        headers["x"][0], headers["y"], classes, sizes, headers.get("timespans"), headers.get("mask")
    )
    return DataConfig(None, path, {}, mode, fraction, source="npz", info=info)
