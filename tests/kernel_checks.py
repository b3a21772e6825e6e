"""What the tests of the fused kernels share: running a computation on both paths."""

import platform

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ncps_mlx import kernels

#: The marks of a test of the kernels: run where they are built and tested (Linux and
#: macOS; a silent fallback there would leave the fused path untested), on the CPU device
#: (a Mac's default is the GPU, where the cells run as MLX operations).
KERNEL_MARKS = [
    pytest.mark.skipif(
        platform.system() not in ("Linux", "Darwin"),
        reason="the kernels are built and tested on Linux and macOS",
    ),
    pytest.mark.usefixtures("on_cpu"),
]


def needs_kernels(test):
    """Mark ``test`` as a test of the kernels (see :data:`KERNEL_MARKS`)."""
    for mark in KERNEL_MARKS:
        test = mark(test)
    return test


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


CALLS = ["plain", "initial-state", "timespans-bt", "timespans-scalar", "mask", "unbatched"]


def check_layer_on_both_paths(layer, call):
    """A fused layer's outputs and gradients for one calling convention (``CALLS``), on
    input (3, 6, 4), against the MLX-operation path."""
    mx.eval(layer.parameters())
    assert kernels.graph_stepper(layer.rnn_cell) is not None
    x = mx.random.normal((3, 6, 4))
    kwargs = {}
    if call == "initial-state":
        kwargs["hx"] = mx.random.normal((3, layer.state_size))
    elif call == "timespans-bt":
        kwargs["timespans"] = mx.random.uniform(0.2, 2.0, (3, 6))
    elif call == "timespans-scalar":
        kwargs["timespans"] = 0.5
    elif call == "mask":
        kwargs["mask"] = mx.array([[True] * 6, [True] * 4 + [False] * 2, [True] + [False] * 5])
    elif call == "unbatched":
        x = x[0]
    fused, graph = both_paths(lambda: layer_call(layer, x, **kwargs))
    for a, b in zip(fused, graph, strict=True):
        close(a, b)
