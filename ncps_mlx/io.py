"""Checkpoints: one safetensors file with the weights and the model's JSON config.

No pickle: the config is JSON in the safetensors header, the weights are plain tensors,
so a checkpoint can be read by any safetensors reader. Files are written to a temporary
name in the target folder and renamed into place, so an interrupted save leaves the
previous checkpoint (or nothing) behind, never a partial file.
"""

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from . import _safetensors
from ._files import atomic_write
from ._saved_config import LoadLimits, check_model_config
from .errors import CheckpointError, UnverifiedCheckpointWarning, see
from .rnn import RNN, model_from_config

FORMAT = "ncps_mlx.checkpoint"
FORMAT_VERSION = 1
_META_KEY = "ncps_mlx"
_DIGEST_KEY = "ncps_mlx.sha256"
WIRING_KEYS = ("adjacency_matrix", "sensory_adjacency_matrix")


def _wiring_arrays(model: RNN) -> dict[str, mx.array]:
    wiring = getattr(model, "wiring", None)
    if wiring is None:
        return {}
    return {f"wiring.{key}": mx.array(getattr(wiring, key).astype(np.int32)) for key in WIRING_KEYS}


def save(
    model: RNN,
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
    extra_arrays: Mapping[str, mx.array] | None = None,
) -> Path:
    """Save ``model`` (weights, wiring and constructor arguments) to ``path``.

    Args:
        model: A [`CfC`][ncps_mlx.CfC] or [`LTC`][ncps_mlx.LTC].
        path: Target file; ``.safetensors`` is appended when it has no suffix.
        metadata: Extra JSON-serialisable information stored with the checkpoint.
        extra_arrays: More tensors to store beside the model's (e.g. an optimizer's
            state); their names must not start with ``model.`` or ``wiring.``.

    Returns:
        The path written.
    """
    from . import __version__

    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix(".safetensors")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ncps_mlx_version": __version__,
        "model": model.get_config(),
        "metadata": dict(metadata or {}),
    }
    arrays = {f"model.{key}": value for key, value in tree_flatten(model.parameters())}
    arrays.update(_wiring_arrays(model))
    for key, value in (extra_arrays or {}).items():
        if key.split(".")[0] in ("model", "wiring"):
            raise ValueError(f"[save] extra array name {key!r} clashes with the model's names")
        arrays[key] = value
    mx.eval(arrays)
    text = json.dumps(header)
    metadata = {_META_KEY: text, _DIGEST_KEY: _safetensors.digest(text, arrays)}
    size = sum(a.nbytes for a in arrays.values()) + len(text) + 256 * (len(arrays) + 1)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:  # through Python, so OS errors keep their errno
            mx.save_safetensors(handle, arrays, metadata=metadata)

    return atomic_write(path, write, suffix=".safetensors", size=size)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, mx.array]]:
    """Read a checkpoint's header and arrays, raising
    [`CheckpointError`][ncps_mlx.errors.CheckpointError] if unusable.

    The file's safetensors header is checked whole before MLX reads the tensors, and the
    tensors and config against the digest saved with them (a file without one loads
    with an [`UnverifiedCheckpointWarning`][ncps_mlx.errors.UnverifiedCheckpointWarning]).
    """
    where = str(path)
    if not Path(path).is_file():
        raise CheckpointError(f"no checkpoint file at {where!r}\n{see('checkpoint-unreadable')}")
    try:
        _, metadata = _safetensors.read_header(path)
    except _safetensors.HeaderError as error:
        raise _unreadable(
            where, f"not a well-formed safetensors file: truncated or corrupt ({error})"
        ) from None
    except OSError as error:
        raise _unreadable(where, f"cannot be read ({error.strerror or error})") from None
    header = _parse_header(where, metadata.get(_META_KEY))
    try:
        arrays = mx.load(where, format="safetensors")
    except Exception as error:  # the header was checked: what is left is the OS's
        raise _unreadable(where, f"cannot be read ({error})") from None
    _verify_digest(where, metadata, arrays)
    return header, arrays


def _unreadable(where: str, what: str) -> CheckpointError:
    return CheckpointError(f"{where!r} is {what}\n{see('checkpoint-unreadable')}")


def _parse_header(where: str, text: str | None) -> dict[str, Any]:
    """The ncps_mlx header of a safetensors file's metadata, its fields' types checked."""
    try:
        header = json.loads(text) if text is not None else None
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _unreadable(where, "not an ncps_mlx checkpoint")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _unreadable(where, f"a checkpoint of format_version {version!r}, not >= 1")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where!r} has checkpoint format {version}; this ncps_mlx reads up to "
            f"{FORMAT_VERSION}: upgrade ncps_mlx\n{see('checkpoint-unreadable')}"
        )
    for key in ("model", "metadata"):
        if not isinstance(header.get(key), dict):
            raise _unreadable(where, f"a checkpoint whose {key!r} is not an object")
    return header


def _verify_digest(where: str, metadata: dict[str, str], arrays: dict[str, mx.array]) -> None:
    saved = metadata.get(_DIGEST_KEY)
    if saved is None:
        warnings.warn(
            f"{where!r} carries no digest (saved by an older ncps_mlx or another writer): "
            "its contents cannot be verified",
            UnverifiedCheckpointWarning,
            stacklevel=3,
        )
    elif saved != _safetensors.digest(metadata.get(_META_KEY, ""), arrays):
        raise CheckpointError(
            f"{where!r} does not match the digest saved with it: it was damaged or changed "
            f"after it was written; use another copy\n{see('checkpoint-unreadable')}"
        )


def _check_wiring(model: RNN, arrays: dict[str, mx.array], path: str) -> None:
    for key, expected in _wiring_arrays(model).items():
        if key not in arrays:
            raise CheckpointError(
                f"{path!r} holds no {key}, which every checkpoint of a wired model has\n"
                + see("checkpoint-unreadable")
            )
        if not mx.array_equal(arrays[key], expected).item():
            raise CheckpointError(
                f"{path!r}: the saved wiring differs from the model's ({key}): was the "
                "wiring edited after construction (add_synapse), which its arguments and seed "
                "do not rebuild, or does this numpy version draw it differently?\n"
                + see("checkpoint-wiring-seed")
            )


def _config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [
        f"{key}: checkpoint {saved.get(key)!r}, model {current.get(key)!r}"
        for key in keys
        if saved.get(key) != current.get(key)
    ]


def _assign(model: RNN, arrays: dict[str, mx.array], path: str) -> None:
    weights = {key[6:]: value for key, value in arrays.items() if key.startswith("model.")}
    params = dict(tree_flatten(model.parameters()))
    problems = [f"missing {key!r}" for key in params if key not in weights]
    problems += [f"unexpected {key!r}" for key in weights if key not in params]
    problems += [
        f"{key!r} has shape {tuple(weights[key].shape)}, the model expects {tuple(p.shape)}"
        for key, p in params.items()
        if key in weights and weights[key].shape != p.shape
    ]
    problems += _dtype_problems(weights)
    if problems:
        raise CheckpointError(
            f"{path!r} does not fit the model:\n  "
            + "\n  ".join(problems)
            + f"\n{see('checkpoint-mismatch')}"
        )
    model.update(tree_unflatten(list(weights.items())))


def _dtype_problems(weights: dict[str, mx.array]) -> list[str]:
    """A model's weights are floating point, all of one dtype (the one it computes in)."""
    dtypes = {value.dtype for value in weights.values()}
    if all(mx.issubdtype(dtype, mx.floating) for dtype in dtypes) and len(dtypes) <= 1:
        return []
    listed = ", ".join(sorted({f"{key!r} is {value.dtype}" for key, value in weights.items()}))
    return [f"weights must be floating point, all of one dtype: {listed}"]


def load(path: str | os.PathLike, *, limits: LoadLimits | None = None) -> RNN:
    """Rebuild the model saved at ``path`` with its weights (in their saved dtype).

    Nothing is built before the whole file is checked: its safetensors header, the
    digest of its contents, and its config against the constructors' arguments and the
    tensors it holds.

    Args:
        path: A file written by [`save`][ncps_mlx.save].
        limits: Bounds on the sizes that cost time but no stored weights (an LTC's
            ``ode_unfolds``, a CfC's ``backbone_layers``). Default:
            [`LoadLimits`][ncps_mlx.LoadLimits].

    Raises:
        CheckpointError: The file is unreadable, damaged, not a checkpoint, or describes
            a model that cannot be built or does not match its tensors.
    """
    where = str(path)
    header, arrays = read_checkpoint(path)
    shapes = {key: list(value.shape) for key, value in arrays.items()}
    problems = check_model_config(header["model"], shapes, limits or LoadLimits())
    if problems:
        raise CheckpointError(
            f"{where!r} describes a model that cannot be built:\n  "
            + "\n  ".join(problems)
            + f"\n{see('checkpoint-unreadable')}"
        )
    try:
        model = model_from_config(header["model"])
    except (ValueError, TypeError, KeyError) as error:  # a constructor's own checks
        raise CheckpointError(
            f"{where!r} describes a model that cannot be built: {error}\n"
            + see("checkpoint-unreadable")
        ) from None
    _check_wiring(model, arrays, where)
    _assign(model, arrays, where)
    return model


def load_weights(model: RNN, path: str | os.PathLike) -> RNN:
    """Load the weights saved at ``path`` into an existing ``model`` of the same config.

    Raises:
        CheckpointError: If the checkpoint was saved from a model with other constructor
            arguments (each difference is listed), or its tensors do not fit.
    """
    return assign_checkpoint(model, *read_checkpoint(path), str(path))


def assign_checkpoint(
    model: RNN, header: dict[str, Any], arrays: dict[str, mx.array], path: str
) -> RNN:
    """Load a checkpoint already read by `read_checkpoint` into ``model``."""
    differences = _config_differences(header["model"], model.get_config())
    if differences:
        raise CheckpointError(
            f"{path!r} was saved from another model:\n  "
            + "\n  ".join(differences)
            + f"\n{see('checkpoint-mismatch')}"
        )
    _check_wiring(model, arrays, path)
    _assign(model, arrays, path)
    return model
