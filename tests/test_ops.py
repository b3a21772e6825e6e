"""The fast transcendentals agree with float64 and with MLX's own functions."""

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import ops


@pytest.fixture(autouse=True)
def _polynomial_everywhere(monkeypatch):
    # The polynomial path is normally taken only inside compiled code on large arrays.
    monkeypatch.setattr(ops, "POLYNOMIAL_MIN_SIZE", 0)
    with ops.compiled_region():
        yield


def test_polynomial_path_only_where_it_pays(monkeypatch):
    monkeypatch.setattr(ops, "POLYNOMIAL_MIN_SIZE", 100)
    big, small = mx.zeros((200,)), mx.zeros((50,))
    assert ops._polynomial_path(big) and not ops._polynomial_path(small)
    assert not ops._polynomial_path(big.astype(mx.float16))


REFERENCE = {
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "exp": np.exp,
}
NATIVE = {"sigmoid": mx.sigmoid, "tanh": mx.tanh, "exp": mx.exp}


def grid(low, high):
    values = np.concatenate([np.linspace(low, high, 20001), [0.0, 1e-8, -1e-8, 1e-4, -1e-4]])
    return values.astype(np.float32)


@pytest.mark.parametrize("name, low, high", [("sigmoid", -60, 60), ("tanh", -20, 20)])
def test_bounded_functions_are_accurate(name, low, high):
    x = grid(low, high)
    ours = np.array(getattr(ops, name)(mx.array(x)), dtype=np.float64)
    exact = REFERENCE[name](x.astype(np.float64))
    assert np.abs(ours - exact).max() < 2e-7
    native = np.array(NATIVE[name](mx.array(x)), dtype=np.float64)
    assert np.abs(ours - exact).max() <= max(np.abs(native - exact).max(), 1.2e-7)


def test_exp_is_accurate_relative():
    x = grid(-80, 80)
    ours = np.array(ops.exp(mx.array(x)), dtype=np.float64)
    exact = np.exp(x.astype(np.float64))
    assert (np.abs(ours - exact) / exact).max() < 3e-7


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_gradients_match_native(name):
    x = mx.array(grid(-8, 8))

    def loss(fn):
        return lambda x: (fn(x) * mx.cos(x)).sum()

    ours = mx.grad(loss(getattr(ops, name)))(x)
    native = mx.grad(loss(NATIVE[name]))(x)
    scale = np.abs(np.array(native)).max()
    np.testing.assert_allclose(np.array(ours), np.array(native), atol=3e-6 * scale)


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_compiled_equals_eager(name):
    x = mx.array(grid(-30, 30))
    fn = getattr(ops, name)
    np.testing.assert_array_equal(np.array(mx.compile(fn)(x)), np.array(fn(x)))


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_other_dtypes_use_native(dtype):
    x = mx.array(grid(-5, 5)).astype(dtype)
    for name, native in NATIVE.items():
        out = getattr(ops, name)(x)
        assert out.dtype == dtype
        np.testing.assert_array_equal(
            np.array(out.astype(mx.float32)), np.array(native(x).astype(mx.float32))
        )
