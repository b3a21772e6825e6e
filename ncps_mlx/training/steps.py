"""Compiled training and inference steps: the fast path.

Compiling the whole train step (forward, backward and optimizer update together) lets MLX
fuse the elementwise work of every time step and removes the per-operation dispatch of
the Python loop; it is the only compile scope that clearly pays for recurrent models.
Arguments are checked outside the compiled function, so bad input still gets a clear
error and nothing is traced on it.
"""

import copy
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from .. import scan
from .._inputs import as_array
from ..errors import see
from ..rnn import RNN
from ..scan import Call, State
from .losses import LossFn, masked_sum
from .recipes import ParamSelection, check_step_options, decay_per_epoch, gradient_rules


def check_target(model: RNN, call: Call, y: Any) -> mx.array:
    """Validate a target against the model's output and return it batch-first.

    Float targets have the output's shape; integer targets are class labels, one per
    output vector, so they lack the last axis.

    Raises:
        ValueError: Naming the shape expected and the shape given.
    """
    owner = type(model).__name__
    y = as_array(owner, "target", y)
    batch, steps = call.x.shape[:2]
    if model.return_sequences:
        prefix = (
            ((batch, steps) if model.batch_first else (steps, batch)) if call.batched else (steps,)
        )
    else:
        prefix = (batch,) if call.batched else ()
    labels = mx.issubdtype(y.dtype, mx.integer)
    expected = prefix if labels else prefix + (model.output_size,)
    if tuple(y.shape) != expected:
        kind = "integer class labels" if labels else "float targets"
        raise ValueError(
            f"[{owner}] {kind} must have shape {expected} for this input and model "
            f"(output_size={model.output_size}, return_sequences={model.return_sequences}) "
            f"but got shape {tuple(y.shape)}\n{see('target-mismatch')}"
        )
    if not call.batched:
        y = y[None]
    elif model.return_sequences and not model.batch_first:
        y = y.swapaxes(0, 1)
    return y


def _sum_over_group(value: Any, group: mx.distributed.Group | None) -> Any:
    if group is None:
        return value
    # average_gradients packs the arrays into few large all-reduces (one per small tree
    # here) instead of one round trip per array; the sum is the average times the size.
    size = group.size()
    return tree_map(lambda a: a * size, nn.average_gradients(value, group=group))


def make_train_step(
    model: RNN,
    optimizer: optim.Optimizer,
    loss_fn: LossFn,
    *,
    compile: bool = True,
    clip_norm: float | None = None,
    clip_tensor_norm: float | None = None,
    clip_value: float | None = None,
    l2: float | None = None,
    l2_params: ParamSelection | None = None,
    lr_decay_per_epoch: float | None = None,
    steps_per_epoch: int | None = None,
    group: mx.distributed.Group | None = None,
) -> Callable[..., mx.array]:
    """Build ``step(x, y, timespans=None, mask=None) -> loss`` that trains on one batch.

    The loss is the mean of ``loss_fn`` over the batch's real steps: padded steps (where
    ``mask`` is ``False``) count for nothing. The options of published recipes (see
    ``ncps_mlx.training.recipes``) run inside the compiled update, in this order: the L2
    penalty's gradient is added, then the gradients are clipped elementwise, per tensor
    and globally, then the optimizer updates.

    Args:
        model: A [`CfC`][ncps_mlx.CfC] or [`LTC`][ncps_mlx.LTC] (or any ``RNN``).
        optimizer: An ``mlx.optimizers`` optimizer; its state lives across steps.
        loss_fn: ``loss_fn(prediction, target)`` returning per-element values (see
            [`LOSSES`][ncps_mlx.training.losses.LOSSES]) or a scalar (e.g.
            ``nn.losses.mse_loss``; not with a mask on per-step outputs).
        compile: Compile the step with ``mx.compile``. Default: ``True``.
        clip_norm: Scale the gradients down to this global L2 norm when above it.
        clip_tensor_norm: Scale each gradient tensor down to this L2 norm when above it
            (Keras' ``clipnorm``).
        clip_value: Clip each gradient element to ``[-clip_value, clip_value]``.
        l2: Add ``l2 * sum(w ** 2)`` over the parameters ``l2_params`` picks to the loss
            (Keras' ``kernel_regularizer=L2(l2)``). The returned loss is the data's alone,
            comparable to a validation loss.
        l2_params: The trainable parameters the penalty takes, by their ``tree_flatten``
            names: a glob (``"rnn_cell.*.weight"``: every weight matrix of the cell, no
            bias), a list of globs, or a predicate of the name. Default: all of them. A
            glob that matches nothing is refused.
        lr_decay_per_epoch: Multiply the optimizer's learning rate (a number or a
            schedule) by this factor per epoch of ``steps_per_epoch`` steps, smoothly
            (``ncps_mlx.training.recipes.EpochDecay``). The optimizer keeps the decay
            until a train step is made for it without one.
        steps_per_epoch: The steps of an epoch, for ``lr_decay_per_epoch``.
        group: Train data-parallel over this ``mx.distributed`` group: each process
            passes its shard of the batch, and the update is the one the whole batch
            would give (gradients summed over the group, each shard weighted by its
            share of the real steps). The returned loss is the whole batch's.

    Returns:
        The step function; it evaluates the update before returning the loss. An LTC with
        ``implicit_param_constraints=False`` has its weight constraints applied after each
        update.
    """
    clips = {"clip_norm": clip_norm, "clip_tensor_norm": clip_tensor_norm, "clip_value": clip_value}
    penalty = {"l2": l2, "l2_params": l2_params}
    owner = "make_train_step"
    check_step_options(owner, model, **clips, **penalty, lr_decay_per_epoch=lr_decay_per_epoch)
    rules = gradient_rules(model, **clips, **penalty)
    decay_per_epoch(optimizer, lr_decay_per_epoch, steps_per_epoch)
    if group is not None and group.size() == 1:
        group = None
    constrain = model.apply_weight_constraints

    def loss_of(model: RNN, x: mx.array, y: mx.array, dt: Any, mask: Any, padded: bool) -> mx.array:
        prediction, _, _ = scan.scan(model, x, None, None, dt, mask, padded=padded)
        total, count = masked_sum(loss_fn(prediction, y), mask if model.return_sequences else None)
        # Dividing by the whole group's count makes the summed gradients the full batch's.
        return total / _sum_over_group(mx.stop_gradient(count), group)

    loss_and_grad = nn.value_and_grad(model, loss_of)

    def update(x: mx.array, y: mx.array, dt: Any, mask: Any, padded: bool) -> mx.array:
        loss, grads = loss_and_grad(model, x, y, dt, mask, padded)
        loss, grads = _sum_over_group((loss, grads), group)
        optimizer.update(model, rules(grads, model.trainable_parameters()))
        constrain()
        return loss

    state = [model.state, optimizer.state, mx.random.state]
    if compile:
        update = mx.compile(update, inputs=state, outputs=state)

    def step(x: Any, y: Any, timespans: Any = None, mask: Any = None) -> mx.array:
        call = scan.check_call(model, x, None, timespans, mask)
        loss = update(call.x, check_target(model, call, y), call.dt, call.mask, call.padded)
        mx.eval(loss, state)
        return loss

    return step


def make_eval_step(
    model: RNN, loss_fn: LossFn, metrics: dict[str, LossFn], *, compile: bool = True
) -> Callable[..., dict[str, tuple[mx.array, mx.array]]]:
    """Build ``evaluate(x, y, timespans=None, mask=None)`` for validation batches.

    It returns, for the loss (key ``"loss"``) and each metric, the sum over the batch's
    real steps and their count, so batches of any size combine into exact means.
    """

    def sums(
        x: mx.array, y: mx.array, dt: Any, mask: Any, padded: bool
    ) -> dict[str, tuple[mx.array, mx.array]]:
        prediction, _, _ = scan.scan(model, x, None, None, dt, mask, padded=padded)
        weights = mask if model.return_sequences else None
        functions = {"loss": loss_fn, **metrics}
        return {name: masked_sum(f(prediction, y), weights) for name, f in functions.items()}

    if compile:
        sums = mx.compile(sums, inputs=[model.state])

    def evaluate(x: Any, y: Any, timespans: Any = None, mask: Any = None) -> dict:
        call = scan.check_call(model, x, None, timespans, mask)
        result = sums(call.x, check_target(model, call, y), call.dt, call.mask, call.padded)
        mx.eval(result)
        return result

    return evaluate


def make_predict(
    model: RNN, *, compile: bool = True, frozen: bool = False
) -> Callable[..., tuple[mx.array, State]]:
    """Build ``predict(x, hx=None, timespans=None, mask=None) -> (y, hx)``, a compiled model call.

    The model is switched to evaluation mode. Shapes are checked outside the compiled
    function; each new input shape compiles once.

    Args:
        model: The layer to call.
        compile: Compile the call with ``mx.compile``. Default: ``True``.
        frozen: Run a copy of the model taken now, with everything it computes from the
            weights alone ([`ncps_mlx.scan.plan`][ncps_mlx.scan.plan]: masks folded in, products
            laid out) computed once here instead of on every call: a seventh to a half of a
            one-step call on the benchmark's models. Later changes to the model's weights
            are not seen: build a new ``predict`` after them. A control loop stepping
            one sample at a time uses [`ncps_mlx.Controller`][ncps_mlx.Controller], which builds on
            this where it cannot run the kernels directly. Default: ``False``.
    """
    model.eval()
    planned = None
    if frozen:
        model = copy.deepcopy(model)
        planned = scan.plan(model)
        mx.eval(planned.consts, planned.lstm_consts)

    def forward(*call: Any) -> tuple[mx.array, State]:
        return scan.run(model, Call(*call), planned)

    if compile:
        # Frozen, without `inputs`: the copy's weights are constants of the compiled call.
        forward = mx.compile(forward) if frozen else mx.compile(forward, inputs=[model.state])

    def predict(
        x: Any, hx: State | None = None, timespans: Any = None, mask: Any = None
    ) -> tuple[mx.array, State]:
        return forward(*scan.check_call(model, x, hx, timespans, mask))

    return predict
