"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A training checkpoint is an ordinary model checkpoint ([`ncps_mlx.load`][ncps_mlx.load] reads it)
with the optimizer's state, MLX's random key and the loop's own state (epoch, history,
the data order generator, callback states) added. It is one file written atomically, so
a save that is killed midway leaves the previous checkpoint in place.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten

from .. import io
from ..errors import CheckpointError, see
from ..rnn import RNN

_OPTIMIZER = "optimizer."
_RNG = "rng.key"
#: The metadata key of the optional inputs a model was trained with (``{"timespans":
#: bool, "mask": bool}``), in the checkpoints of ``fit`` and ``ncps-mlx train``: a model
#: trained with timespans needs them at inference, and ``ncps-mlx export`` keeps its ``dt``.
TRAINED_WITH = "trained_with"


def trained_with(*, timespans: bool, mask: bool) -> dict[str, dict[str, bool]]:
    """The checkpoint metadata saying which optional inputs the model was trained with."""
    return {TRAINED_WITH: {"timespans": timespans, "mask": mask}}


def read_trained_with(metadata: Mapping[str, Any]) -> dict[str, bool] | None:
    """What a checkpoint's metadata says of the inputs its model was trained with; None
    when it says nothing usable (saved by ``ncps_mlx.save`` alone, or by an earlier version)."""
    record = metadata.get(TRAINED_WITH)
    keys = ("timespans", "mask")
    if not isinstance(record, dict) or not all(isinstance(record.get(k), bool) for k in keys):
        return None
    return {key: record[key] for key in keys}


def save_training_state(
    path: str | os.PathLike,
    model: RNN,
    optimizer: optim.Optimizer,
    loop_state: dict[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write the model, the optimizer state, MLX's random key and ``loop_state`` (JSON),
    with more ``metadata`` beside it."""
    arrays = {_OPTIMIZER + key: value for key, value in tree_flatten(optimizer.state)}
    arrays[_RNG] = mx.random.state[0]
    metadata = {**(metadata or {}), "training": loop_state}
    return io.save(model, path, metadata=metadata, extra_arrays=arrays)


def load_training_state(
    path: str | os.PathLike, model: RNN, optimizer: optim.Optimizer
) -> dict[str, Any]:
    """Restore what `save_training_state` wrote, in place, and return the loop state.

    The optimizer and random state are assigned into the existing containers, so a train
    step compiled over them sees the restored values.
    """
    header, arrays = io.read_checkpoint(path)
    loop_state = header["metadata"].get("training")
    if loop_state is None or _RNG not in arrays:
        raise CheckpointError(
            f"{str(path)!r} is a model checkpoint without a training state\n{see('resume')}"
        )
    io.assign_checkpoint(model, header, arrays, str(path))
    saved = {key[len(_OPTIMIZER) :]: a for key, a in arrays.items() if key.startswith(_OPTIMIZER)}
    optimizer.init(model.trainable_parameters())
    _check_like(dict(tree_flatten(optimizer.state)), saved, str(path))
    _check_like({_RNG: mx.random.state[0]}, {_RNG: arrays[_RNG]}, str(path))
    assign_in_place(optimizer.state, saved, str(path))
    set_random_key(arrays[_RNG])
    return loop_state


def _check_like(expected: dict[str, mx.array], saved: dict[str, mx.array], path: str) -> None:
    """Refuse saved state whose names, shapes or dtypes differ from freshly made state:
    training on it would go on silently with broadcast or converted values."""
    problems = [f"missing {key!r}" for key in expected if key not in saved]
    problems += [f"unexpected {key!r}" for key in saved if key not in expected]
    problems += [
        f"{key!r} is {saved[key].dtype} {tuple(saved[key].shape)}, this run's is "
        f"{value.dtype} {tuple(value.shape)}"
        for key, value in expected.items()
        if key in saved and (saved[key].shape, saved[key].dtype) != (value.shape, value.dtype)
    ]
    if problems:
        raise CheckpointError(
            f"{path!r}: the saved training state does not fit this optimizer and model "
            "(another optimizer class, or a damaged file?):\n  "
            + "\n  ".join(problems)
            + f"\n{see('resume')}"
        )


def set_random_key(key: mx.array) -> None:
    """Make ``key`` MLX's global random key (a (2,) uint32 array)."""
    # MLX's key after seed(s) is s's two 32-bit halves, so this sets any key exactly.
    high, low = (int(part) for part in key.tolist())
    mx.random.seed((high << 32) | low)


def assign_in_place(state: dict, flat: dict[str, mx.array], path: str) -> None:
    """Set the leaves of the nested ``state`` from ``flat`` ("a.0.b" paths), in place.

    A train step compiled over ``state`` keeps seeing the same containers.
    """
    if set(dict(tree_flatten(state))) != set(flat):
        raise CheckpointError(
            f"{path!r}: the saved optimizer state does not fit this optimizer and model "
            f"(another optimizer class or model?)\n{see('resume')}"
        )
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        container = state
        for part in parents:
            container = container[int(part) if isinstance(container, list) else part]
        container[int(leaf) if isinstance(container, list) else leaf] = value
