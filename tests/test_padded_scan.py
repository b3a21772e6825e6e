"""Padding at the end of sequences runs on the fused kernels: the same outputs, final
states and gradients as the step-by-step scan that holds the state at padded steps."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ncps_mlx import LTC, CfC, scan
from ncps_mlx.wirings import AutoNCP

MODELS = {
    "wired CfC": lambda: CfC(3, AutoNCP(8, 2)),
    "LTC": lambda: LTC(3, AutoNCP(8, 2)),
    "CfC, mixed memory and projection": lambda: CfC(3, 8, mixed_memory=True, proj_size=2),
    "wired CfC, last output": lambda: CfC(3, AutoNCP(8, 2), return_sequences=False),
}


def _batch(mask_rows):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((len(mask_rows), 12, 3)).astype(np.float32)
    dt = rng.uniform(0.5, 2.0, x.shape[:2]).astype(np.float32)
    return mx.array(x), mx.array(dt), mx.array(np.array(mask_rows, bool))


PREFIX = [[True] * 12, [True] * 7 + [False] * 5, [True] * 3 + [False] * 9, [True] + [False] * 11]


def _loss_and_outputs(model, call, padded):
    def loss(params):
        model.update(params)
        y, h, _ = scan.scan(model, call.x, None, None, call.dt, call.mask, padded=padded)
        return (y**2).sum() + (h**2).sum(), (y, h)

    (_, (y, h)), grads = mx.value_and_grad(loss)(model.trainable_parameters())
    return y, h, grads


@pytest.mark.parametrize("name", MODELS)
def test_padding_on_the_fused_path_equals_the_step_by_step_scan(name):
    mx.random.seed(1)
    model = MODELS[name]()
    x, dt, mask = _batch(PREFIX)
    call = scan.check_call(model, x, None, dt, mask)
    assert call.padded
    y_steps, h_steps, g_steps = _loss_and_outputs(model, call, padded=False)
    y_fused, h_fused, g_fused = _loss_and_outputs(model, call, padded=True)
    np.testing.assert_allclose(np.array(y_fused), np.array(y_steps), atol=1e-6)
    np.testing.assert_allclose(np.array(h_fused), np.array(h_steps), atol=1e-6)
    for (key, a), (_, b) in zip(tree_flatten(g_fused), tree_flatten(g_steps), strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5, rtol=1e-4, err_msg=key)


def test_the_final_state_is_the_last_real_steps():
    model = CfC(3, AutoNCP(8, 2))
    x, dt, mask = _batch(PREFIX)
    _, h = model(x, timespans=dt, mask=mask)
    for row, steps in enumerate((12, 7, 3, 1)):
        _, alone = model(x[row : row + 1, :steps], timespans=dt[row : row + 1, :steps])
        np.testing.assert_allclose(np.array(h[row]), np.array(alone[0]), atol=1e-6)


def test_padded_steps_may_hold_anything():
    model = LTC(3, AutoNCP(8, 2))
    x, dt, mask = _batch(PREFIX)
    garbage = mx.where(mask[..., None], x, mx.array(np.nan))
    zero_dt = mx.where(mask, dt, 0.0)  # an LTC divides by its timespans
    y, h = model(garbage, timespans=zero_dt, mask=mask)
    assert np.isfinite(np.array(h)).all()
    expected, _ = model(x, timespans=dt, mask=mask)
    np.testing.assert_allclose(np.array(y), np.array(expected), atol=1e-6)


def test_a_mask_with_gaps_keeps_the_step_by_step_scan():
    model = CfC(3, AutoNCP(8, 2))
    holes = [[True, False] * 6, [True] * 12, [False] + [True] * 11, [True] * 12]
    x, dt, mask = _batch(holes)
    call = scan.check_call(model, x, None, dt, mask)
    assert not call.padded
    # A masked step holds the state: the explicit loop of one-step calls.
    h = mx.zeros((4, model.state_size))
    for t in range(12):
        _, stepped = model(x[:, t : t + 1], h, timespans=dt[:, t : t + 1])
        h = mx.where(mask[:, t : t + 1], stepped, h)
    _, final = model(x, timespans=dt, mask=mask)
    np.testing.assert_allclose(np.array(final), np.array(h), atol=1e-6)
