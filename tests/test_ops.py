"""The fast transcendentals agree with float64 and MLX's own; split_steps with slicing."""

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import ops


@pytest.fixture(autouse=True)
def _rational_everywhere(monkeypatch):
    monkeypatch.setattr(ops, "RATIONAL_MIN_SIZE", 0)


def test_rational_only_on_large_float32_arrays(monkeypatch):
    monkeypatch.setattr(ops, "RATIONAL_MIN_SIZE", 100)
    big = mx.zeros((200,))
    assert ops._use_rational(big)
    assert not ops._use_rational(mx.zeros((50,)))
    assert not ops._use_rational(big.astype(mx.float16))
    with ops.native_transcendentals():
        assert not ops._use_rational(big)


EXACT = {"sigmoid": lambda x: 1 / (1 + np.exp(-x)), "tanh": np.tanh}
NATIVE = {"sigmoid": mx.sigmoid, "tanh": mx.tanh}
# Absolute error bounds over the whole float32 line; MLX's own functions reach ~1e-7.
BOUNDS = {"sigmoid": 3e-7, "tanh": 4e-7}


def grid(low, high):
    values = np.concatenate([np.linspace(low, high, 400001), [0.0, 1e-8, -1e-8, 1e-4, -1e-4]])
    return values.astype(np.float32)


@pytest.mark.parametrize("name", sorted(EXACT))
def test_accurate_against_float64(name):
    x = grid(-60, 60)
    ours = np.array(getattr(ops, name)(mx.array(x)), dtype=np.float64)
    assert np.abs(ours - EXACT[name](x.astype(np.float64))).max() < BOUNDS[name]


def test_tanh_keeps_relative_accuracy_near_zero():
    x = np.float32([1e-6, -3e-5, 2e-3, -0.1])
    ours = np.array(ops.tanh(mx.array(x)), dtype=np.float64)
    np.testing.assert_allclose(ours, np.tanh(x.astype(np.float64)), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_gradients_match_native(name):
    x = mx.array(grid(-8, 8))

    def loss(fn):
        return lambda x: (fn(x) * mx.cos(x)).sum()

    ours = mx.grad(loss(getattr(ops, name)))(x)
    native = mx.grad(loss(NATIVE[name]))(x)
    np.testing.assert_allclose(np.array(ours), np.array(native), atol=2e-6)


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


def test_split_steps_matches_slicing_forward_and_backward():
    a = mx.random.normal((3, 5, 4))
    weights = mx.random.normal((5, 3, 4))

    def loss(a, split):
        steps = ops.split_steps(a) if split else [a[:, t] for t in range(a.shape[1])]
        return sum((step * weights[t]).sum() for t, step in enumerate(steps))

    assert [s.shape for s in ops.split_steps(a)] == [(3, 4)] * 5
    assert np.array_equal(np.array(ops.split_steps(a)[2]), np.array(a[:, 2]))
    grads = [mx.grad(loss)(a, split) for split in (True, False)]
    np.testing.assert_array_equal(np.array(grads[0]), np.array(grads[1]))
    # A step left unused gets a zero gradient.
    unused = mx.grad(lambda a: ops.split_steps(a)[1].sum())(a)
    assert float(mx.abs(unused[:, 0]).max()) == 0 and float(unused[:, 1].min()) == 1
