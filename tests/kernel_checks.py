"""What the tests of the fused kernels share: running a computation on both paths."""

import platform

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ncps_mlx import kernels

needs_kernels = pytest.mark.skipif(
    platform.system() != "Linux", reason="the kernels are built on Linux only"
)


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=tol, atol=tol)


def both_paths(run):
    """``run()`` fused and as MLX operations (the GPU's path)."""
    fused = run()
    with kernels.disabled():
        graph = run()
    return fused, graph


def layer_call(model, x, **kwargs):
    def loss(params, x):
        model.update(params)
        y, h = model(x, **kwargs)
        return (y * y).sum() + h.sum(), (y, h)

    (_, (y, h)), grads = mx.value_and_grad(loss)(model.trainable_parameters(), x)
    return [y, h] + [g for _, g in tree_flatten(grads)]
