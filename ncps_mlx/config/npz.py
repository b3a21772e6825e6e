"""``data.path``: the arrays of an ``.npz`` file, checked from their headers."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ._fields import Problems, choose

NPZ_ARRAYS = ("x", "y", "timespans", "mask", "classes")
"""The arrays an `.npz` file of `data.path` may hold (`x` and `y` are required); each but
`classes` may also come as `val_*`, the validation split."""


def npz_headers(path: Path, problems: Problems) -> dict[str, tuple] | None:
    """``name -> (shape, dtype)`` of every array in an .npz file, read from the headers."""
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    if version not in readers:
                        raise ValueError(f"npy format {version} of {member} is not supported")
                    shape, _, dtype = readers[version](handle)
                headers[member.removesuffix(".npy")] = (shape, dtype)
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        problems.add(
            "data.path",
            f"{str(path)!r} is not a readable .npz file ({error})",
            "write it with numpy.savez",
        )
        return None
    return headers


def check_npz_arrays(headers: dict[str, tuple], problems: Problems) -> bool:
    """Check the arrays' names, dtypes and shapes; return whether they are usable."""
    before = len(problems)
    allowed = NPZ_ARRAYS + tuple(f"val_{name}" for name in NPZ_ARRAYS if name != "classes")
    for name in headers:
        if name not in allowed:
            problems.add(
                "data.path",
                f"the file has an unknown array {name!r}",
                choose(name, allowed, "remove it; allowed arrays:"),
            )
    for name, (_, dtype) in headers.items():
        if dtype.hasobject:  # np.load refuses pickled objects, as it should
            problems.add(
                "data.path",
                f"the array {name!r} holds Python objects",
                "save numbers, booleans or strings",
            )
    for prefix in ("", "val_"):
        present = [key for key in ("x", "y") if prefix + key in headers]
        if prefix and not present:
            continue
        if len(present) < 2:
            problems.add(
                "data.path",
                f"the file lacks {prefix}x or {prefix}y",
                f"save both {prefix}x and {prefix}y",
            )
            continue
        _check_split_arrays(headers, prefix, problems)
    if "x" in headers and "val_x" in headers:
        features = headers["x"][0][-1:], headers["val_x"][0][-1:]
        if features[0] != features[1]:
            problems.add(
                "data.path",
                f"x has {features[0]} features but val_x {features[1]}",
                "give both the same features",
            )
    return len(problems) == before


def _check_split_arrays(headers: dict[str, tuple], prefix: str, problems: Problems) -> None:
    (x_shape, x_dtype), (y_shape, y_dtype) = headers[prefix + "x"], headers[prefix + "y"]
    name = f"{prefix}x"
    if len(x_shape) != 3 or 0 in x_shape or x_dtype.kind != "f":
        problems.add(
            "data.path",
            f"{name} is {x_dtype} {x_shape}",
            f"{name} must be floats of shape (samples, time, features)",
        )
        return
    n, t = x_shape[:2]
    y_shape = tuple(y_shape)
    if y_dtype.kind in "iu":
        fits = y_shape in ((n,), (n, t))
    else:
        fits = y_dtype.kind == "f" and (
            (len(y_shape) == 2 and y_shape[0] == n) or (len(y_shape) == 3 and y_shape[:2] == (n, t))
        )
    if not fits:
        problems.add(
            "data.path",
            f"{prefix}y is {y_dtype} {y_shape}, which does not fit {name} {x_shape}",
            f"{prefix}y must be ({n},) or ({n}, {t}) int labels, or ({n}, O) or ({n}, {t}, O) "
            "floats",
        )
    for key, kinds in (("timespans", "f"), ("mask", "b")):
        if prefix + key in headers:
            shape, dtype = headers[prefix + key]
            if tuple(shape) != (n, t) or dtype.kind not in kinds:
                kind = "floats" if kinds == "f" else "booleans"
                problems.add(
                    "data.path",
                    f"{prefix}{key} is {dtype} {shape}",
                    f"it must be {kind} of shape ({n}, {t})",
                )


def npz_classes(path: Path, headers: dict[str, tuple], problems: Problems) -> int | None:
    """The class count of integer labels (None for float targets, False on a problem)."""
    if headers["y"][1].kind not in "iu":
        return None
    with np.load(path) as archive:  # only the label arrays, which are small
        labels = [archive[key] for key in ("y", "val_y") if key in headers]
        named = len(archive["classes"]) if "classes" in headers else None
    low = min(int(y.min()) for y in labels)
    high = max(int(y.max()) for y in labels)
    if low < 0 or (named is not None and high >= named):
        limit = f"below {named} (the length of classes)" if named is not None else "that are >= 0"
        problems.add(
            "data.path", f"the class labels range over [{low}, {high}]", f"use labels {limit}"
        )
        return False
    return named if named is not None else high + 1
