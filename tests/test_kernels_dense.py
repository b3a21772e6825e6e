"""The kernels' dense primitives against MLX operations: the product ``c + a @ b``
(hoisted projections and their gradients) and the mixed-memory LSTM step."""

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import CfC, kernels, ops
from ncps_mlx.cells.lstm import LSTMCell, lstm_update
from tests.kernel_checks import KERNEL_MARKS, close

pytestmark = KERNEL_MARKS


def normal(*shape, seed=0):
    return mx.array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


# --- c + a @ b --------------------------------------------------------------------------

SHAPES = {
    "square": (40, 24, 40),
    "edges": (13, 7, 45),  # rows and columns that fill no whole tile
    "long-inner": (16, 5000, 20),  # a weight's gradient over many samples: inner pieces
    "one-row": (1, 33, 70),
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("shape", SHAPES)
def test_addmm_matches_mlx_forward_and_backward(shape, bias):
    m, k, n = SHAPES[shape]
    a, b, c = normal(m, k, seed=1), normal(k, n, seed=2), normal(n, seed=3) if bias else None
    scale = normal(m, n, seed=4)

    def loss(product, a, b, c):
        return (product(c, a, b) * scale).sum()

    def theirs(c, a, b):
        return a @ b if c is None else mx.addmm(c, a, b)

    close(kernels.addmm(c, a, b), theirs(c, a, b), tol=2e-4)
    argnums = (0, 1, 2) if bias else (0, 1)
    ours = mx.grad(lambda a, b, c: loss(kernels.addmm, a, b, c), argnums)(a, b, c)
    expected = mx.grad(lambda a, b, c: loss(theirs, a, b, c), argnums)(a, b, c)
    for mine, reference in zip(ours, expected, strict=True):
        close(mine, reference, tol=2e-4)


def test_addmm_reads_leading_dimensions_and_strided_operands():
    a = normal(3, 5, 8)
    b = mx.array(np.array(normal(6, 8, seed=1)).T).T.T  # a transposed view, (8, 6)
    c = mx.broadcast_to(normal(1, seed=2), (6,))
    close(kernels.addmm(c, a, b), mx.addmm(c, a, b))
    close(kernels.addmm(None, a.swapaxes(1, 2).swapaxes(1, 2), b), a @ b)


def test_addmm_rejects_what_does_not_fit():
    with pytest.raises(ValueError, match=r"'a' \(M, K\) and 'b' \(K, N\) do not fit"):
        kernels.addmm(None, normal(4, 3), normal(5, 2))
    with pytest.raises(ValueError, match=r"'c' must be float32 of shape \(N,\) = \(2,\)"):
        kernels.addmm(normal(3), normal(4, 3), normal(3, 2))
    with pytest.raises(ValueError, match="must be float32 matrices"):
        kernels.addmm(None, normal(4, 3).astype(mx.float16), normal(3, 2))
    with pytest.raises(ValueError, match=r"\[addmm\] takes a \(..., K\), b \(K, N\)"):
        kernels.addmm(None, normal(4, 3), normal(3))


def test_the_output_projection_runs_on_the_product():
    model = CfC(3, 8, proj_size=2)
    projection = kernels.graph_stepper(model.fc)
    assert projection is not None
    x = normal(4, 5, 8)
    close(projection(x), model.fc(x))


# --- the mixed-memory LSTM step ---------------------------------------------------------


def lstm_reference(z, h, c, wh_t):
    """The cell's update with MLX operations (the same rational tanh and sigmoid)."""
    return lstm_update(ops, z + h @ wh_t, c)


@pytest.mark.parametrize("batch", [1, 11])
def test_lstm_step_matches_the_cell_forward_and_backward(batch):
    n = 5
    z, h, c = normal(batch, 4 * n), normal(batch, n, seed=1), normal(batch, n, seed=2)
    wh_t = normal(n, 4 * n, seed=3) * 0.5
    scale_h, scale_c = normal(batch, n, seed=4), normal(batch, n, seed=5)

    def loss(step, *args):
        h_next, c_next = step(*args)
        return (h_next * scale_h).sum() + (c_next * scale_c).sum()

    expected = lstm_reference(z, h, c, wh_t)
    for mine, reference in zip(kernels.lstm_step(z, h, c, wh_t), expected, strict=True):
        close(mine, reference)
    argnums = (0, 1, 2, 3)
    ours = mx.grad(lambda *a: loss(kernels.lstm_step, *a), argnums)(z, h, c, wh_t)
    expected = mx.grad(lambda *a: loss(lstm_reference, *a), argnums)(z, h, c, wh_t)
    for mine, reference in zip(ours, expected, strict=True):
        close(mine, reference)


def test_lstm_step_rejects_what_does_not_fit():
    z, h, c, wh_t = normal(2, 12), normal(2, 3), normal(2, 3), normal(3, 12)
    with pytest.raises(ValueError, match=r"'z' must be float32 of shape \(2, 12\)"):
        kernels.lstm_step(z[:, :8], h, c, wh_t)
    with pytest.raises(ValueError, match=r"'wh_t' must be float32 of shape \(3, 12\)"):
        kernels.lstm_step(z, h, c, wh_t.T)
    with pytest.raises(ValueError, match=r"'c' must be float32 of shape \(2, 3\)"):
        kernels.lstm_step(z, h, c[:1], wh_t)


def test_the_fused_lstm_steps_as_the_cell_does():
    cell = LSTMCell(4, 6)
    stepper = kernels.graph_stepper(cell)
    assert stepper is not None
    x, h, c = normal(3, 4), normal(3, 6, seed=1), normal(3, 6, seed=2)
    consts = stepper.derive()
    fused = stepper.step(consts, stepper.project(consts, x), h, c)
    for mine, reference in zip(fused, cell(x, (h, c)), strict=True):
        close(mine, reference)
