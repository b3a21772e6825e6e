"""Losses and metrics that respect padding masks.

A loss here returns one value per element (``reduction="none"``) so padded steps can be
left out of the mean: a batch's loss is the mean over real steps only, whatever the
padding. A loss function that returns a scalar is accepted too, but not with a mask on
per-step outputs, where it would average the padding in.
"""

from collections.abc import Callable, Iterable
from functools import partial

import mlx.core as mx
import mlx.nn as nn

LossFn = Callable[[mx.array, mx.array], mx.array]


def _binary_targets(prediction: mx.array, target: mx.array) -> mx.array:
    """0/1 targets as floats of the logits' shape: integer labels, which lack the last
    axis (one label per output vector), gain it."""
    if target.ndim == prediction.ndim - 1:
        target = target[..., None]
    return target.astype(prediction.dtype)


def binary_cross_entropy(prediction: mx.array, target: mx.array) -> mx.array:
    r"""Per-element binary cross-entropy of logits against 0/1 targets.

    $$
    \ell(z, y) = \log(1 + e^{z}) - z y
    $$

    computed as ``logaddexp(0, z) - z y``, finite for any logit. ``target`` holds floats
    of the prediction's shape (soft targets in [0, 1] are fine) or, for a single logit,
    integer labels 0 and 1 without the last axis.
    """
    targets = _binary_targets(prediction, target)
    return nn.losses.binary_cross_entropy(prediction, targets, with_logits=True, reduction="none")


LOSSES: dict[str, LossFn] = {
    "mse": partial(nn.losses.mse_loss, reduction="none"),
    "mae": partial(nn.losses.l1_loss, reduction="none"),
    "huber": partial(nn.losses.huber_loss, reduction="none"),
    "cross_entropy": partial(nn.losses.cross_entropy, reduction="none"),
    "binary_cross_entropy": binary_cross_entropy,
}
"""The losses ``fit`` and run configs take by name, each returning one value per element."""
# The losses and metrics whose targets are integer class labels, one per output vector;
# every other one here takes float targets of the output's shape.
_LABEL_TARGETS = frozenset({"cross_entropy", "accuracy"})
# Those that score logits against 0/1 targets: float targets of the output's shape, and
# with a single logit also integer labels 0 and 1.
_BINARY = frozenset({"binary_cross_entropy", "binary_accuracy"})
CLASSIFICATION_LOSSES = frozenset(name for name in LOSSES if name in _LABEL_TARGETS)


def takes_labels(name: str) -> bool:
    """Whether the loss or metric ``name`` takes integer class labels (else float targets).

    ``fit`` checks a loss against the data with it, and a run config its loss and metrics.
    The binary ones take float targets here: they take integer labels only from a model
    with a single output (see `suits_targets`).
    """
    return name in _LABEL_TARGETS


def suits_targets(name: str, labels: bool, output_size: int) -> bool:
    """Whether the loss or metric ``name`` can take integer labels (``labels``) or float
    targets from a model with ``output_size`` outputs."""
    if labels and name in _BINARY:
        return output_size == 1
    return takes_labels(name) == labels


def targets_needed(name: str) -> str:
    """The targets the loss or metric ``name`` takes, in words, for an error message."""
    if name in _BINARY:
        return "0/1 float targets of the output's shape, or 0/1 integer labels (output_size 1)"
    return "integer class labels" if takes_labels(name) else "float targets"


def label_classes(name: str | LossFn, output_size: int) -> tuple[int, str]:
    """How many classes the integer labels of loss ``name`` may name, and why: 0 and 1
    for a binary loss, else one per output."""
    if isinstance(name, str) and name in _BINARY:
        return 2, "a binary loss takes 0 or 1"
    return output_size, "the model's output_size"


def suited_to(names: Iterable[str], labels: bool) -> list[str]:
    """The ``names`` that take integer class labels (``labels``) or float targets, sorted."""
    return sorted(name for name in names if takes_labels(name) == labels)


def resolve_loss(loss: str | LossFn) -> LossFn:
    """The loss function for a name in [`LOSSES`][ncps_mlx.training.losses.LOSSES], or ``loss``
    itself if callable."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; use one of {sorted(LOSSES)} or a function")
    return LOSSES[loss]


def masked_sum(values: mx.array, mask: mx.array | None) -> tuple[mx.array, mx.array]:
    """Sum of ``values`` over real steps and how many values were summed.

    Args:
        values: Per-element values, (B, T, ...) when ``mask`` is given.
        mask: ``None`` or boolean (B, T, 1), ``True`` at real steps.
    """
    if values.ndim == 0:
        if mask is not None:
            raise ValueError(
                "the loss returned a scalar, so padded steps cannot be left out: use a "
                f"built-in loss ({sorted(LOSSES)}) or return per-step values"
            )
        return values, mx.array(1.0)
    if mask is None:
        return values.sum(), mx.array(float(values.size))
    weights = mask.reshape(mask.shape[:2] + (1,) * (values.ndim - 2)).astype(values.dtype)
    per_element = values[0, 0].size if values.ndim > 2 else 1
    return (values * weights).sum(), weights.sum() * per_element


def accuracy(prediction: mx.array, target: mx.array) -> mx.array:
    """Per-element hit (1.0) or miss (0.0) of the arg-max class."""
    return (mx.argmax(prediction, axis=-1) == target).astype(mx.float32)


def binary_accuracy(prediction: mx.array, target: mx.array) -> mx.array:
    """Per-element hit (1.0) or miss (0.0) of the logit's sign: a logit above 0 predicts 1,
    and a target counts as 1 above 0.5 (targets as `binary_cross_entropy` takes)."""
    return ((prediction > 0) == (_binary_targets(prediction, target) > 0.5)).astype(mx.float32)


METRICS: dict[str, LossFn] = {
    "accuracy": accuracy,
    "binary_accuracy": binary_accuracy,
    "mae": LOSSES["mae"],
    "mse": LOSSES["mse"],
}
"""The metrics ``fit`` and run configs take by name, per element like the losses."""


def resolve_metrics(metrics: dict[str, LossFn] | list | tuple) -> dict[str, LossFn]:
    """Metric functions by name, from names in [`METRICS`][ncps_mlx.training.losses.METRICS] or a
    name-to-function dict."""
    if isinstance(metrics, dict):
        return dict(metrics)
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; use {sorted(METRICS)} or a dict of functions")
    return {name: METRICS[name] for name in metrics}
