"""Validation of what a sequence layer is called with.

Each check raises before anything is computed, with a message naming the layer, the
value it got and what it accepts. Shapes are normalised to batch-first here so the time
scan sees one layout only.
"""

import math
from typing import Any

import mlx.core as mx
import numpy as np

from .errors import see


def as_float32_numpy(owner: str, name: str, value: Any) -> np.ndarray:
    """``value`` (a NumPy or MLX array, a number or a list) as a float32 NumPy array, for
    the one-step controllers; a ValueError for anything not numeric. Values beyond
    float32 become inf, which the callers then refuse as non-finite."""
    if isinstance(value, mx.array) and mx.issubdtype(value.dtype, mx.floating):
        value = value.astype(mx.float32)  # NumPy holds no bfloat16
    accepted = (np.ndarray, np.generic, mx.array, list, tuple, int, float)
    array = np.asarray(value) if isinstance(value, accepted) else None
    if array is None or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise ValueError(
            f"[{owner}] {name!r} must be a numeric NumPy or MLX array (or a number or list) "
            f"but got {type(value).__name__}" + (f" of {array.dtype}" if array is not None else "")
        )
    with np.errstate(over="ignore"):
        return array.astype(np.float32, copy=False)


def as_array(owner: str, name: str, value: Any) -> mx.array:
    """Convert numpy arrays and nested lists to an ``mx.array``; reject anything else."""
    if isinstance(value, mx.array):
        return value
    if isinstance(value, (np.ndarray, list, tuple, int, float)):
        value = np.asarray(value)
        # float64 has no GPU kernels in MLX; the layer casts to its own dtype anyway.
        return mx.array(value.astype(np.float32) if value.dtype == np.float64 else value)
    raise ValueError(f"[{owner}] {name!r} must be an mlx or numpy array but got {type(value)}")


def check_sequence(owner: str, x: Any, input_size: int, batch_first: bool) -> tuple[mx.array, bool]:
    """Return the input as (B, T, F) and whether it was batched."""
    x = as_array(owner, "input", x)
    layout = "(batch, time, features)" if batch_first else "(time, batch, features)"
    if x.ndim not in (2, 3) or x.shape[-1] != input_size or 0 in x.shape:
        raise ValueError(
            f"[{owner}] input must have shape {layout} or, unbatched, (time, features) with "
            f"{input_size} features, but got shape {tuple(x.shape)}\n{see('input-shape')}"
        )
    if x.ndim == 2:
        return x[None], False
    return (x if batch_first else x.swapaxes(0, 1)), True


def check_state(
    owner: str, hx: Any, mixed: bool, state_size: int, batch: int, batched: bool
) -> tuple[mx.array | None, mx.array | None]:
    """Return ``(h, c)`` as (B, state_size) arrays (``None`` where not given)."""
    if hx is None:
        return None, None
    if mixed:
        if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise ValueError(
                f"[{owner}] with mixed_memory=True 'hx' must be a pair (h, c) but got "
                f"{type(hx).__name__}\n{see('initial-state')}"
            )
        parts = [as_array(owner, "hx", part) for part in hx]
    else:
        if isinstance(hx, (tuple, list)):
            raise ValueError(
                f"[{owner}] 'hx' must be one array (a pair (h, c) needs mixed_memory=True)"
                f"\n{see('initial-state')}"
            )
        parts = [as_array(owner, "hx", hx)]
    expected = (batch, state_size) if batched else (state_size,)
    for part in parts:
        if tuple(part.shape) != expected:
            raise ValueError(
                f"[{owner}] each state in 'hx' must have shape {expected} but got "
                f"{tuple(part.shape)}\n{see('initial-state')}"
            )
    parts = [part if batched else part[None] for part in parts]
    return parts[0], (parts[1] if mixed else None)


def readable(value: mx.array) -> bool:
    """Whether ``value``'s contents can be read here: not inside a function transformation
    (``mx.compile``, ``mx.vmap``), where reading would raise. Value checks skip there."""
    try:
        value.item() if value.size == 1 else value.reshape(-1)[0].item()
    except ValueError as error:
        if "function transformations" in str(error):
            return False
        raise
    return True


def _check_values(owner: str, values: mx.array, positive: bool) -> None:
    if not readable(values):
        return
    finite = mx.all(mx.isfinite(values)).item()
    low = mx.min(values).item() if finite else math.nan
    if not finite or low < 0 or (positive and low == 0):
        allowed = "> 0" if positive else ">= 0"
        raise ValueError(
            f"[{owner}] timespans must be finite and {allowed}, but got values in "
            f"[{mx.min(values).item()}, {mx.max(values).item()}]\n{see('timespans')}"
        )


def check_timespans(
    owner: str,
    timespans: Any,
    batch: int,
    steps: int,
    batched: bool,
    batch_first: bool,
    positive: bool,
    mask: mx.array | None = None,
) -> mx.array | float:
    """Return timespans as a float (one for every step) or a (B, T, 1) array.

    With a (B, T, 1) ``mask`` (from `check_mask`) the values at padded steps are
    neither checked nor used: they become 1, so padding with 0 suits an LTC too.
    """
    if timespans is None:
        return 1.0
    values = as_array(owner, "timespans", timespans)
    if values.ndim == 0 and readable(values):
        _check_values(owner, values, positive)
        return float(values.item())
    if values.ndim == 0:  # a traced scalar: one per step, as an array
        return mx.broadcast_to(values.reshape(1, 1, 1), (batch, steps, 1))
    layout = ((batch, steps) if batch_first else (steps, batch)) if batched else (steps,)
    if tuple(values.shape) not in (layout, layout + (1,)):
        raise ValueError(
            f"[{owner}] timespans must be a scalar or have shape {layout} or {layout + (1,)} "
            f"to match the input, but got shape {tuple(values.shape)}\n{see('timespans')}"
        )
    values = values.reshape(layout)
    if not batched:
        values = values[None]
    elif not batch_first:
        values = values.T
    values = values[..., None]
    if mask is not None:
        values = mx.where(mask, values, mx.ones((), dtype=values.dtype))
    _check_values(owner, values, positive)
    return values


def check_mask(
    owner: str, mask: Any, batch: int, steps: int, batched: bool, batch_first: bool
) -> mx.array | None:
    """Return the mask as a boolean (B, T, 1) array, or ``None`` when not given."""
    if mask is None:
        return None
    values = as_array(owner, "mask", mask)
    if values.dtype != mx.bool_:
        raise ValueError(
            f"[{owner}] mask must be boolean (True at real steps) but got {values.dtype}"
            f"\n{see('mask')}"
        )
    layout = ((batch, steps) if batch_first else (steps, batch)) if batched else (steps,)
    if tuple(values.shape) != layout:
        raise ValueError(
            f"[{owner}] mask must have shape {layout} to match the input, but got shape "
            f"{tuple(values.shape)}\n{see('mask')}"
        )
    if not batched:
        values = values[None]
    elif not batch_first:
        values = values.T
    return values[..., None]
