"""The matrix products of the fully connected CfC's train step alone, for both
implementations: with the train step itself, they split its time into BLAS and the rest."""

import pytest

from benchmarks.workloads import IMPLS, breakdown_cases


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", breakdown_cases(), ids=lambda case: case.id)
def test_breakdown(measure, case, impl):
    measure(case, impl)
