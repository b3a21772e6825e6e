"""The argument checks every part of the package shares.

Each raises a ``ValueError`` reading ``[Owner] 'name' must be <what is allowed> but got
<value>``: the class or function, the argument, what it accepts and what it was given.
"""

import math
import numbers
from collections.abc import Iterable
from typing import Any


def check_int(owner: str, name: str, value: Any, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int, or a ValueError unless it is an integer in ``low..high``."""
    allowed = f"an int >= {low}" if high is None else f"an int in {low}..{high}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"[{owner}] '{name}' must be {allowed} but got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"[{owner}] '{name}' must be {allowed} but got {value}")
    return int(value)


def check_number(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> float:
    """``value`` as a float, or a ValueError unless it is a finite real number within the
    bounds given: ``>= low``, ``<= high``, ``> above``, ``< below``."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    inside = real and math.isfinite(value)
    for bound, test in ((low, float.__ge__), (above, float.__gt__)):
        inside = inside and (bound is None or test(float(value), float(bound)))
    for bound, test in ((high, float.__le__), (below, float.__lt__)):
        inside = inside and (bound is None or test(float(value), float(bound)))
    if not inside:
        allowed = _interval(low, high, above, below)
        raise ValueError(f"[{owner}] '{name}' must be a number {allowed} but got {value!r}")
    return float(value)


def _interval(low: Any, high: Any, above: Any, below: Any) -> str:
    """The bounds as ``in [0, 1)``, ``>= 0`` or ``that is finite``."""
    start = f"[{low:g}" if low is not None else f"({above:g}" if above is not None else None
    end = f"{high:g}]" if high is not None else f"{below:g})" if below is not None else None
    if start and end:
        return f"in {start}, {end}"
    if start:
        return f"{'>=' if low is not None else '>'} {start[1:]}"
    if end:
        return f"{'<=' if high is not None else '<'} {end[:-1]}"
    return "that is finite"


def check_choice(owner: str, name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value``, or a ValueError listing ``choices`` unless it is one of them."""
    choices = list(choices)
    if isinstance(value, (list, dict, set)) or value not in choices:
        raise ValueError(f"[{owner}] unknown {name} {value!r}; choose one of {choices}")
    return value
