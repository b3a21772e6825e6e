"""Inference over batch size and sequence length, and training over batch size, for
ncps_mlx and the reference."""

import pytest

from benchmarks.workloads import IMPLS, sweep_cases


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", sweep_cases(), ids=lambda case: case.id)
def test_sweep(measure, case, impl):
    measure(case, impl)
