"""What published training recipes add to the plain step, inside the compiled update.

- Clipping: elementwise (``clip_value``), per tensor (``clip_tensor_norm``, Keras'
  ``clipnorm``, which the CfC paper's code uses) and over all tensors (``clip_norm``,
  Keras' ``global_clipnorm``, PyTorch's ``clip_grad_norm_``).
- An L2 penalty ``l2 * sum(w ** 2)`` on chosen parameters (Keras' ``kernel_regularizer=
  L2(l2)``), added to the loss's gradient: unlike decoupled weight decay (``AdamW``) it
  passes through the optimizer's scaling and the clipping, as in the papers' code.
- A learning rate decayed by a factor per epoch, as Keras' ``ExponentialDecay(rate,
  steps_per_epoch, factor)``.

`check_step_options` checks them (``fit`` calls it before anything runs);
`gradient_rules` turns them into one function of the gradients.
"""

import fnmatch
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_map_with_path

#: Which parameters the L2 penalty takes: a glob over the names ``tree_flatten`` gives
#: (``"rnn_cell.*.weight"``), several globs, or a predicate of the name.
ParamSelection = str | Sequence[str] | Callable[[str], bool]
GradientRule = Callable[[dict, dict], dict]


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive(owner: str, name: str, value: Any) -> None:
    if value is not None and not (_number(value) and 0 < value < math.inf):
        raise ValueError(f"[{owner}] {name} must be a number > 0 or None, got {value!r}")


def _as_float(value: Any) -> float | None:
    # A numpy scalar would turn an MLX array it meets into numpy inside the compiled step.
    return None if value is None else float(value)


def check_step_options(
    owner: str,
    model: nn.Module,
    *,
    clip_norm: float | None = None,
    clip_tensor_norm: float | None = None,
    clip_value: float | None = None,
    l2: float | None = None,
    l2_params: ParamSelection | None = None,
    lr_decay_per_epoch: float | None = None,
) -> None:
    """Raise ``ValueError("[owner] ...")`` for an option of the step that cannot work.

    A glob of ``l2_params`` that names no parameter of ``model`` is refused, with the
    names there are: a typo would otherwise leave the penalty off without a word.
    """
    for name, value in (
        ("clip_norm", clip_norm),
        ("clip_tensor_norm", clip_tensor_norm),
        ("clip_value", clip_value),
        ("l2", l2),
    ):
        _positive(owner, name, value)
    if l2_params is not None:
        if l2 is None:
            raise ValueError(f"[{owner}] l2_params chooses where l2 applies: set l2 too")
        l2_selected(owner, model, l2_params)
    factor = lr_decay_per_epoch
    if factor is not None and not (_number(factor) and 0 < factor <= 1):
        raise ValueError(
            f"[{owner}] lr_decay_per_epoch must be a factor in (0, 1] or None, got {factor!r}"
        )


def l2_selected(owner: str, model: nn.Module, selection: ParamSelection | None) -> list[str]:
    """The names of the trainable parameters ``selection`` picks (all when None).

    Raises:
        ValueError: A glob matches no parameter, or the selection picks none.
    """
    names = [name for name, _ in tree_flatten(model.trainable_parameters())]
    if selection is None:
        return names
    if callable(selection):
        chosen = [name for name in names if selection(name)]
    else:
        globs = [selection] if isinstance(selection, str) else list(selection)
        for glob in globs:
            if not isinstance(glob, str) or not fnmatch.filter(names, glob):
                raise ValueError(
                    f"[{owner}] l2_params {glob!r} matches no trainable parameter; the "
                    f"model's are {', '.join(names)}"
                )
        chosen = [name for name in names if any(fnmatch.fnmatchcase(name, g) for g in globs)]
    if not chosen:
        raise ValueError(f"[{owner}] l2_params picks no trainable parameter")
    return chosen


def _clip_values(grads: dict, bound: float) -> dict:
    return tree_map(lambda g: mx.clip(g, -bound, bound), grads)


def _clip_tensor_norms(grads: dict, bound: float) -> dict:
    # bound / max(norm, bound): 1 below the bound, and no division by a zero norm.
    def clip(g: mx.array) -> mx.array:
        norm = mx.sqrt(mx.sum(mx.square(g.astype(mx.float32))))
        return g * (bound / mx.maximum(norm, bound)).astype(g.dtype)

    return tree_map(clip, grads)


def _l2_gradients(grads: dict, params: dict, l2: float, chosen: frozenset[str]) -> dict:
    # The gradient of l2 * sum(w ** 2) is 2 * l2 * w.
    def add(path: str, g: mx.array, w: mx.array) -> mx.array:
        return g + (2 * l2) * w if path in chosen else g

    return tree_map_with_path(add, grads, params)


def gradient_rules(
    model: nn.Module,
    *,
    clip_norm: float | None = None,
    clip_tensor_norm: float | None = None,
    clip_value: float | None = None,
    l2: float | None = None,
    l2_params: ParamSelection | None = None,
) -> GradientRule:
    """``rule(grads, params) -> grads``: the L2 penalty's gradient added, then the clips.

    The clips run from the finest to the coarsest: elementwise, per tensor, then over all
    tensors. Each only shrinks gradients, so every bound given holds at the end.
    """
    chosen = frozenset(l2_selected("make_train_step", model, l2_params)) if l2 else frozenset()
    l2, clip_norm = _as_float(l2), _as_float(clip_norm)
    clip_tensor_norm, clip_value = _as_float(clip_tensor_norm), _as_float(clip_value)

    def rule(grads: dict, params: dict) -> dict:
        if chosen:
            grads = _l2_gradients(grads, params, l2, chosen)
        if clip_value is not None:
            grads = _clip_values(grads, clip_value)
        if clip_tensor_norm is not None:
            grads = _clip_tensor_norms(grads, clip_tensor_norm)
        if clip_norm is not None:
            grads, _ = optim.clip_grad_norm(grads, clip_norm)
        return grads

    return rule


class EpochDecay:
    """A learning rate times ``factor ** (step / steps_per_epoch)``.

    ``base`` is the optimizer's own rate, a number or a schedule of the step. The decay is
    smooth, as Keras' ``ExponentialDecay`` without ``staircase``: at the first step of
    epoch ``e`` (counting from 0) the rate is exactly ``base * factor ** e``.
    """

    def __init__(self, base: Any, factor: float, steps_per_epoch: int):
        self.base, self.factor, self.steps_per_epoch = base, factor, steps_per_epoch

    def __call__(self, step: mx.array) -> mx.array:
        rate = self.base(step) if callable(self.base) else self.base
        epochs = step.astype(mx.float32) / self.steps_per_epoch
        return rate * mx.power(mx.array(self.factor, mx.float32), epochs)


def decay_per_epoch(
    optimizer: optim.Optimizer, factor: float | None, steps_per_epoch: int | None
) -> None:
    """Put ``optimizer``'s learning rate on an `EpochDecay` (or take it off: None).

    The decay replaces one an earlier call set, so training the same optimizer again does
    not compound them. It counts the optimizer's own steps, which its state saves: a
    resumed run decays as the uninterrupted one.
    """
    # MLX evaluates the schedules in `_schedulers` at each update and has no public way to
    # put a rate on one after construction.
    schedules = optimizer._schedulers
    current = schedules.get("learning_rate")
    if isinstance(current, EpochDecay):
        if callable(current.base):
            schedules["learning_rate"] = current.base
        else:
            del schedules["learning_rate"]
            optimizer.learning_rate = current.base
        current = current.base
    if factor is None:
        return
    if not (isinstance(steps_per_epoch, int) and steps_per_epoch >= 1):
        raise ValueError(
            f"[make_train_step] lr_decay_per_epoch needs steps_per_epoch, an int >= 1; got "
            f"{steps_per_epoch!r}"
        )
    base = current if current is not None else optimizer.learning_rate
    schedules["learning_rate"] = EpochDecay(base, float(factor), steps_per_epoch)
    optimizer.learning_rate = schedules["learning_rate"](optimizer.step)
