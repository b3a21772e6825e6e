"""Numerical checks around a model's call: timespans its solver cannot take, and a
diagnosis when finite inputs give nan or inf.

The models stay math: a cell that knows where its solver fails declares it with
[`timespan_bounds`][ncps_mlx.cells.Cell.timespan_bounds], and the callers that take timespans from a
user (the [`Controller`][ncps_mlx.Controller], training) compare them with it here. Cells that do
not declare bounds are not checked.

Example:
    ```python
    import warnings
    from ncps_mlx import LTC
    from ncps_mlx.numerics import UnstableSolverWarning, check_timespans

    model = LTC(4, 8, solver="explicit_euler")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert check_timespans(model, 1e6, owner="demo")  # True: it warned
    assert caught[0].category is UnstableSolverWarning
    ```
"""

import math
import warnings
from typing import Any

import mlx.core as mx
import numpy as np

from .errors import see

__all__ = ["UnstableSolverWarning", "check_timespans", "timespan_bounds"]


class UnstableSolverWarning(RuntimeWarning):
    """Timespans beyond those for which a cell's solver is known to stay finite: its
    outputs may diverge or become nan (see
    [`timespan_bounds`][ncps_mlx.cells.Cell.timespan_bounds])."""


def _cell(model: Any) -> Any:
    """The cell of a sequence layer, or ``model`` itself when it is a cell."""
    return getattr(model, "rnn_cell", model)


def timespan_bounds(model: Any) -> tuple[float, float] | None:
    """``(smallest, largest)`` timespan per step that the cell of ``model`` (a sequence
    layer or a cell) declares its solver stays finite for, from its current weights
    ([`timespan_bounds`][ncps_mlx.cells.Cell.timespan_bounds]); ``None`` when the cell declares none
    or bounds nothing."""
    declared = getattr(_cell(model), "timespan_bounds", None)
    bounds = declared() if callable(declared) else None
    if bounds is None:
        return None
    low, high = float(bounds[0]), float(bounds[1])
    return None if low <= 0 and math.isinf(high) else (low, high)


def check_timespans(
    model: Any,
    timespans: Any,
    owner: str,
    *,
    bounds: tuple[float, float] | None = None,
    stacklevel: int = 2,
) -> bool:
    """Warn with [`UnstableSolverWarning`][ncps_mlx.numerics.UnstableSolverWarning] when
    ``timespans`` leave the [`timespan_bounds`][ncps_mlx.numerics.timespan_bounds] of ``model``'s
    cell.

    Args:
        model: A sequence layer (or a cell).
        timespans: A number, a NumPy or MLX array, or ``None`` (the layers' default, 1).
            Values that are not finite are left to the callers' own checks.
        owner: Who checks, first in the message: ``[owner] ...``.
        bounds: The bounds, when the caller has them already (computed once from frozen
            weights); default: [`timespan_bounds`][ncps_mlx.numerics.timespan_bounds] of ``model``
            now.
        stacklevel: As for `warnings.warn`, counted from the caller of this
            function. Default: 2 (the caller's caller).

    Returns:
        Whether it warned.
    """
    bounds = timespan_bounds(model) if bounds is None else bounds
    if bounds is None:
        return False
    shortest, longest = _extremes(timespans)
    if shortest is None:
        return False
    if shortest >= bounds[0] and longest <= bounds[1]:
        return False
    warn_unstable(model, shortest, longest, owner, bounds, stacklevel=stacklevel + 1)
    return True


def warn_unstable(
    model: Any,
    shortest: float,
    longest: float,
    owner: str,
    bounds: tuple[float, float],
    *,
    stacklevel: int = 2,
) -> None:
    """The [`UnstableSolverWarning`][ncps_mlx.numerics.UnstableSolverWarning] of timespans in
    ``[shortest, longest]`` outside ``bounds``: it names the cell, its solver and dtype, the bound
    and what to do."""
    warnings.warn(
        unstable_message(model, shortest, longest, owner, bounds),
        UnstableSolverWarning,
        stacklevel=stacklevel + 1,
    )


def unstable_message(
    model: Any, shortest: float, longest: float, owner: str, bounds: tuple[float, float]
) -> str:
    """The text of `warn_unstable`."""
    text = beyond_bounds(model, shortest, longest, bounds)
    return f"[{owner}] {text}\n{see('unstable-solver')}"


def beyond_bounds(model: Any, shortest: float, longest: float, bounds: tuple[float, float]) -> str:
    """What is wrong with timespans in ``[shortest, longest]`` outside ``bounds`` and what
    to do, in a sentence (the controller's [`NumericsError`][ncps_mlx.errors.NumericsError] quotes
    it)."""
    solver = describe(_cell(model))
    if longest > bounds[1]:
        return (
            f"a timespan of {longest:.3g} exceeds {bounds[1]:.3g}, the largest for which "
            f"{solver} is known to stay stable: the outputs may diverge or become nan. Use "
            "shorter timespans (split a long gap into several steps), more ode_unfolds (the "
            "bound grows with them) or a solver stable for any step (the LTC's "
            "'semi_implicit')."
        )
    dtype = parameter_dtype(_cell(model))
    wider = "" if dtype is None or dtype == mx.float32 else "float32 parameters "
    wider += "(model.set_dtype(mx.float32)), " if wider else ""
    return (
        f"a timespan of {shortest:.3g} is below {bounds[0]:.3g}, the smallest for which "
        f"{solver} is known to stay finite: dividing by so short a step overflows the "
        f"dtype. Use {wider}longer timespans or fewer ode_unfolds."
    )


def describe(cell: Any) -> str:
    """``LTCCell's 'rk4' solver (ode_unfolds=6, float16)``: the cell's class and what it
    has of a solver, sub-steps and dtype."""
    details = []
    unfolds = getattr(cell, "ode_unfolds", None)
    if unfolds is not None:
        details.append(f"ode_unfolds={unfolds}")
    dtype = parameter_dtype(cell)
    if dtype is not None:
        details.append(str(dtype).removeprefix("mlx.core."))
    solver = getattr(cell, "solver", None)
    text = f"{type(cell).__name__}'s {solver!r} solver" if solver else type(cell).__name__
    return f"{text} ({', '.join(details)})" if details else text


def parameter_dtype(model: Any) -> mx.Dtype | None:
    """The dtype of the first parameter of ``model`` (a module), ``None`` without any."""
    from mlx.utils import tree_flatten

    leaves = tree_flatten(model.parameters()) if hasattr(model, "parameters") else []
    return leaves[0][1].dtype if leaves else None


def _extremes(timespans: Any) -> tuple[float | None, float | None]:
    """The smallest and largest finite positive values of ``timespans``, ``(None, None)``
    without."""
    if timespans is None:
        return 1.0, 1.0
    if isinstance(timespans, (int, float)):
        value = float(timespans)
        return (value, value) if math.isfinite(value) and value > 0 else (None, None)
    if isinstance(timespans, mx.array):
        values = np.asarray(timespans.astype(mx.float32))
    else:
        values = np.asarray(timespans, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]  # the callers refuse the others
    if values.size == 0:
        return None, None
    return float(values.min()), float(values.max())
