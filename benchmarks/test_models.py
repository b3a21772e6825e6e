"""The issue's workloads (batch 32, 128 steps, 16 features; step1 is one step at batch 1),
each for ncps_mlx and for the reference on torch, timed in the same run."""

import pytest

from benchmarks.workloads import IMPLS, core_cases


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", core_cases(), ids=lambda case: case.id)
def test_model(measure, case, impl):
    measure(case, impl)
