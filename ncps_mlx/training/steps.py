"""Compiled training and inference steps: the fast path.

Compiling the whole train step (forward, backward and optimizer update together) lets MLX
fuse the elementwise work of every time step and removes the per-operation dispatch of
the Python loop; it is the only compile scope that clearly pays for recurrent models.
Arguments are checked outside the compiled function, so bad input still gets a clear
error and nothing is traced on it.
"""

from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

from ..rnn import RNN, State

LossFn = Callable[[mx.array, mx.array], mx.array]


def make_train_step(
    model: RNN, optimizer: optim.Optimizer, loss_fn: LossFn, *, compile: bool = True
) -> Callable[..., mx.array]:
    """Build ``step(x, y, timespans=None) -> loss`` that trains ``model`` on one batch.

    Args:
        model: A :class:`~ncps_mlx.CfC` or :class:`~ncps_mlx.LTC` (or any ``RNN``).
        optimizer: An ``mlx.optimizers`` optimizer; its state lives across steps.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` (e.g. ``nn.losses.mse_loss``).
        compile: Compile the step with ``mx.compile``. Default: ``True``.

    Returns:
        The step function; it evaluates the update before returning the loss. An LTC with
        ``implicit_param_constraints=False`` has its weight constraints applied after each
        update.
    """
    constrain = getattr(model, "apply_weight_constraints", lambda: None)

    def loss_of(model: RNN, x: mx.array, y: mx.array, dt: Any, batched: bool) -> mx.array:
        prediction, _ = model.forward(x, None, None, dt, batched)
        return loss_fn(prediction, y)

    loss_and_grad = nn.value_and_grad(model, loss_of)

    def update(x: mx.array, y: mx.array, dt: Any, batched: bool) -> mx.array:
        loss, grads = loss_and_grad(model, x, y, dt, batched)
        optimizer.update(model, grads)
        constrain()
        return loss

    state = [model.state, optimizer.state, mx.random.state]
    if compile:
        update = mx.compile(update, inputs=state, outputs=state)

    def step(x: Any, y: mx.array, timespans: Any = None) -> mx.array:
        call = model.check_call(x, None, timespans)
        loss = update(call.x, mx.array(y), call.dt, call.batched)
        mx.eval(loss, state)
        return loss

    return step


def make_predict(model: RNN, *, compile: bool = True) -> Callable[..., tuple[mx.array, State]]:
    """Build ``predict(x, hx=None, timespans=None) -> (y, hx)``, a compiled model call.

    The model is switched to evaluation mode. Shapes are checked outside the compiled
    function; each new input shape compiles once.
    """
    model.eval()
    forward = mx.compile(model.forward, inputs=[model.state]) if compile else model.forward

    def predict(x: Any, hx: State | None = None, timespans: Any = None) -> tuple[mx.array, State]:
        return forward(*model.check_call(x, hx, timespans))

    return predict
