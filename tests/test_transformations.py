"""The layers under every MLX transformation a user applies to code that calls them:
mx.compile, nn.value_and_grad / mx.grad and mx.vmap, with timespans and masks, on the
fused kernels and on MLX operations alike."""

import contextlib

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

from ncps_mlx import LTC, CfC, kernels
from ncps_mlx.wirings import AutoNCP

MODELS = {
    "cfc": lambda: CfC(3, 6, backbone_units=8),
    "cfc-ncp-mixed": lambda: CfC(3, AutoNCP(8, 2, seed=1), mixed_memory=True),
    "ltc-ncp": lambda: LTC(3, AutoNCP(8, 2, seed=1)),
    "ltc-rk4-proj": lambda: LTC(3, 5, solver="rk4", ode_unfolds=2, proj_size=2),
}
PATHS = ["fused", "mlx-ops"]


@pytest.fixture(params=PATHS)
def path(request):
    """Run the test with the fused kernels where they apply, then without any."""
    with kernels.disabled() if request.param == "mlx-ops" else contextlib.nullcontext():
        yield request.param


def _call_arguments(batch: int = 2, steps: int = 5):
    x = mx.random.normal((batch, steps, 3))
    dt = mx.random.uniform(0.2, 1.5, (batch, steps))
    mask = mx.array([[True] * steps] + [[True] * 2 + [False] * (steps - 2)] * (batch - 1))
    return x, dt, mask


def _close(a, b, tol=1e-5):
    assert mx.allclose(a, b, rtol=tol, atol=tol).item()


@pytest.mark.parametrize("name", MODELS)
def test_compiled_call_with_timespans_and_mask(name, path):
    mx.random.seed(0)
    model, (x, dt, mask) = MODELS[name](), _call_arguments()
    expected, _ = model(x, timespans=dt, mask=mask)
    compiled = mx.compile(lambda x, dt, mask: model(x, timespans=dt, mask=mask)[0])
    _close(compiled(x, dt, mask), expected)
    # A timespan given as an array scalar is traced too.
    scalar = mx.compile(lambda x, t: model(x, timespans=t)[0])
    _close(scalar(x, mx.array(0.7)), model(x, timespans=0.7)[0])


@pytest.mark.parametrize("name", MODELS)
def test_compiled_loss_and_gradients(name, path):
    """MLX's idiom: compile a loss that calls the model, under nn.value_and_grad."""
    mx.random.seed(0)
    model, (x, dt, mask) = MODELS[name](), _call_arguments()

    def loss(model, x, dt, mask):
        y, _ = model(x, timespans=dt, mask=mask)
        return (y * y).sum()

    loss_and_grad = nn.value_and_grad(model, loss)
    value, grads = loss_and_grad(model, x, dt, mask)
    state = [model.state]
    compiled = mx.compile(lambda *call: loss_and_grad(model, *call), inputs=state, outputs=state)
    compiled_value, compiled_grads = compiled(x, dt, mask)
    _close(compiled_value, value)
    expected = dict(tree_flatten(grads))
    for key, gradient in tree_flatten(compiled_grads):
        _close(gradient, expected[key])


@pytest.mark.parametrize("name", MODELS)
def test_gradients_with_respect_to_inputs_and_timespans(name, path):
    mx.random.seed(0)
    model, (x, dt, mask) = MODELS[name](), _call_arguments()

    def loss(x, dt):
        return model(x, timespans=dt, mask=mask)[0].sum()

    dx, ddt = mx.grad(loss, argnums=(0, 1))(x, dt)
    cdx, cddt = mx.compile(mx.grad(loss, argnums=(0, 1)))(x, dt)
    _close(cdx, dx)
    _close(cddt, ddt)
    # Against a central difference in one timespan.
    step = 1e-2
    bumped = [dt + sign * step * (mx.arange(dt.size).reshape(dt.shape) == 0) for sign in (1, -1)]
    numeric = (loss(x, bumped[0]) - loss(x, bumped[1])) / (2 * step)
    assert abs(numeric.item() - ddt[0, 0].item()) < 2e-2 * max(1.0, abs(numeric.item()))


@pytest.mark.parametrize("name", MODELS)
def test_vmap_over_an_ensemble_of_batches(name, path):
    mx.random.seed(0)
    model = MODELS[name]()
    calls = [_call_arguments() for _ in range(3)]
    xs, dts, masks = (mx.stack(parts) for parts in zip(*calls, strict=True))
    mapped = mx.vmap(lambda x, dt, mask: model(x, timespans=dt, mask=mask)[0])(xs, dts, masks)
    for index, (x, dt, mask) in enumerate(calls):
        _close(mapped[index], model(x, timespans=dt, mask=mask)[0])


@pytest.mark.parametrize("name", ["cfc-ncp-mixed", "ltc-ncp"])
def test_per_example_gradients_with_vmap(name, path):
    mx.random.seed(0)
    model = MODELS[name]()
    params = model.trainable_parameters()
    xs = mx.random.normal((3, 2, 4, 3))

    def loss(params, x):
        model.update(params)
        return (model(x)[0] ** 2).sum()

    per_example = dict(tree_flatten(mx.vmap(mx.grad(loss), in_axes=(None, 0))(params, xs)))
    one_by_one = [dict(tree_flatten(mx.grad(loss)(params, x))) for x in xs]
    model.update(params)
    for key, gradient in per_example.items():
        _close(gradient, mx.stack([grads[key] for grads in one_by_one]))


def test_value_checks_run_outside_transformations_only():
    model, (x, dt, _) = LTC(3, 4), _call_arguments()
    negative = -dt
    with pytest.raises(ValueError, match=r"timespans must be finite and > 0"):
        model(x, timespans=negative)
    # Inside compile the values cannot be read: the shapes are still checked.
    compiled = mx.compile(lambda x, dt: model(x, timespans=dt)[0])
    mx.eval(compiled(x, negative))
    with pytest.raises(ValueError, match=r"timespans must be a scalar or have shape \(2, 5\)"):
        compiled(x, dt[:, :3])
