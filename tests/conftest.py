import mlx.core as mx
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seed():
    mx.random.seed(0)
    np.random.seed(0)


@pytest.fixture
def on_cpu():
    """Make the CPU the default device for the test (the fused kernels' device)."""
    previous = mx.default_device()
    mx.set_default_device(mx.cpu)
    yield
    mx.set_default_device(previous)


def assert_close(actual, expected, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(np.array(actual), np.array(expected), rtol=rtol, atol=atol)
