import mlx.core as mx
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seed():
    mx.random.seed(0)
    np.random.seed(0)


def assert_close(actual, expected, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(np.array(actual), np.array(expected), rtol=rtol, atol=atol)
