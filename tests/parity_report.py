"""Prints the parity table of ncps_mlx against the stored ncps 1.0.1 reference fixtures.

Run from the repository root (no torch needed)::

    PYTHONPATH=. python -m tests.parity_report      # or: python tests/parity_report.py

One row per case: the largest absolute difference of the outputs, of the final state(s),
and of the gradients (input, initial states and every parameter), and the largest of
``|ours - ref| / (ATOL + RTOL |ref|)`` over all of them ("margin": the test passes below 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.parity_cases import CASES, Case  # noqa: E402
from tests.parity_mlx import ATOL, RTOL, load_fixture, max_abs_diffs, mlx_results  # noqa: E402

COLUMNS = ("case", "output", "state", "gradient", "margin")


def _margin(ours: dict, ref: dict) -> float:
    return max(
        float(np.max(np.abs(ours[k] - ref[k]) / (ATOL + RTOL * np.abs(ref[k])), initial=0.0))
        for k in ref
    )


def parity_row(case: Case) -> tuple[str, float, float, float, float]:
    """``(id, output, state, gradient, margin)`` for one case, against its fixture."""
    _, groups = load_fixture(case.id)
    ref = groups["ref"]
    ours = mlx_results(case, groups["state_dict"], groups["input"], groups["r"])
    diffs = max_abs_diffs(ours, ref)
    state = max(diffs[k] for k in ("h", "c") if k in diffs)
    grad = max(v for k, v in diffs.items() if k.startswith("grad/"))
    return case.id, diffs["y"], state, grad, _margin(ours, ref)


def main() -> None:
    width = max(len(case.id) for case in CASES)
    print(f"| {COLUMNS[0]:<{width}} | " + " | ".join(f"{c:>8}" for c in COLUMNS[1:]) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * 10 for _ in COLUMNS[1:]) + "|")
    worst = 0.0
    for case in CASES:
        name, *values = parity_row(case)
        worst = max(worst, values[-1])
        print(f"| {name:<{width}} | " + " | ".join(f"{v:8.1e}" for v in values) + " |")
    print(f"\n{len(CASES)} cases; rtol={RTOL:g}, atol={ATOL:g}; worst margin {worst:.3f}")


if __name__ == "__main__":
    main()
