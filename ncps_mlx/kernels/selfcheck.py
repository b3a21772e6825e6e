"""The kernels prove themselves on the machine that built them before anything uses them.

Once per build (the outcome is recorded beside the library), every kernel runs on random
inputs through the package's own paths and is compared with the MLX-operation path, the
one every device has:

- ``ltc_step`` and ``cfc_step`` (every CfC mode and backbone activation, a cell with a
  backbone and a wired one), the mixed-memory ``lstm_step`` and the products of
  ``addmm``: a layer's outputs, final state and the gradients of every parameter and of
  the input, with timespans, with a padding mask (step by step) and without one (a CfC
  layer's whole sequence in one call, ``cfc_sequence``);
- the direct forms (``cfc_step``, ``ltc_step``, the sensory synapse sums and the
  mixed-memory LSTM): a [`Controller`][ncps_mlx.Controller]'s steps against the layer's call.

A kernel that disagrees by more than `TOLERANCE` fails the check: the kernels stay
off and the cells run as MLX operations. MLX's random state is left as it was.
"""

from collections.abc import Callable

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

#: The largest difference allowed, relative to the values' scale (float32 arithmetic in
#: another order, and the rational tanh of both paths).
TOLERANCE = 1e-4


def _models() -> dict[str, Callable]:
    from ..cells.activations import ACTIVATIONS
    from ..cells.cfc import MODES
    from ..rnn import LTC, CfC
    from ..wirings import AutoNCP

    models = {
        "ltc_step": lambda: LTC(3, AutoNCP(8, 2, seed=1)),
        "ltc_step (mixed memory)": lambda: LTC(3, AutoNCP(8, 2, seed=1), mixed_memory=True),
    }
    models["cfc_step (wired)"] = lambda: CfC(3, AutoNCP(10, 2, seed=1), proj_size=1)
    models["cfc_step (mixed memory)"] = lambda: CfC(3, 4, mixed_memory=True, backbone_units=5)
    for mode in MODES:
        models[f"cfc_step ({mode})"] = lambda mode=mode: CfC(
            3, 4, mode=mode, backbone_units=5, backbone_layers=2
        )
    for activation in ACTIVATIONS:
        models[f"cfc_step ({activation})"] = lambda activation=activation: CfC(
            3, 4, activation=activation, backbone_units=5
        )
    return models


def _inputs() -> tuple[mx.array, mx.array, mx.array]:
    key = mx.random.key(0)
    x = mx.random.normal((3, 5, 3), key=key)
    dt = mx.random.uniform(0.3, 1.7, (3, 5), key=mx.random.split(key)[0])
    mask = mx.array([[True] * 5, [True] * 3 + [False] * 2, [True] * 5])
    return x, dt, mask


def _layer(model, x, dt, mask) -> list[mx.array]:
    """Outputs, final state and every gradient of a layer's call."""

    def loss(params, x):
        model.update(params)
        y, state = model(x, timespans=dt, mask=mask)
        h = state[0] if isinstance(state, tuple) else state
        return (y * y).sum() + h.sum(), (y, h)

    params = model.trainable_parameters()
    (_, (y, h)), (grads, dx) = mx.value_and_grad(loss, argnums=(0, 1))(params, x)
    model.update(params)
    return [y, h, dx] + [g for _, g in tree_flatten(grads)]


def _controller(model, x, dt) -> list[mx.array]:
    """A Controller's outputs, step by step: on the direct kernels where they run (else
    through MLX's graph)."""
    from ..controller import Controller
    from .library import usable

    controller = Controller(model)
    if controller.direct != usable(mx.float32):
        raise RuntimeError("the Controller did not take the path the check asked for")
    x, dt = np.array(x), np.array(dt)
    steps = [controller(x[:, t], timespan=dt[:, t]) for t in range(x.shape[1])]
    return [mx.array(np.stack(steps, axis=1))]


def _differences(fused: list[mx.array], graph: list[mx.array]) -> float:
    worst = 0.0
    for a, b in zip(fused, graph, strict=True):
        scale = max(1.0, float(mx.abs(b).max()))
        worst = max(worst, float(mx.abs(a - b).max()) / scale)
    return worst


def run() -> str | None:
    """``None`` when every kernel agrees with the MLX-operation path; else which did
    not, and by how much. Call with the kernels loaded (see
    [`library`][ncps_mlx.kernels.library])."""
    from ..training.checkpoint import set_random_key
    from .library import disabled

    key = mx.random.state[0]
    try:
        x, dt, mask = _inputs()
        for name, make in _models().items():
            mx.random.seed(1)
            model = make()
            mx.eval(model.parameters())
            checks = {
                f"{name}, masked": lambda model=model: _layer(model, x, dt, mask),
                f"{name}, whole sequence": lambda model=model: _layer(model, x, dt, None),
                f"{name}, direct": lambda model=model: _controller(model, x, dt),
            }
            for label, compute in checks.items():
                fused = compute()
                with disabled():
                    graph = compute()
                difference = _differences(fused, graph)
                if not difference <= TOLERANCE:  # a NaN fails too
                    return f"{label} differs from MLX operations by {difference:.2g}"
        return None
    finally:
        set_random_key(key)
