"""Checkpoints: one safetensors file with the weights and the model's JSON config.

No pickle: the config is JSON in the safetensors header, the weights are plain tensors,
so a checkpoint can be read by any safetensors reader. Files are written to a temporary
name in the target folder and renamed into place, so an interrupted save leaves the
previous checkpoint (or nothing) behind, never a partial file.
"""

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from .errors import CheckpointError, see
from .rnn import RNN, model_from_config

FORMAT = "ncps_mlx.checkpoint"
FORMAT_VERSION = 1
_META_KEY = "ncps_mlx"
WIRING_KEYS = ("adjacency_matrix", "sensory_adjacency_matrix")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Any, suffix: str = "") -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` once it is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only; files get the usual mode
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


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
        model: A :class:`~ncps_mlx.CfC` or :class:`~ncps_mlx.LTC`.
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
    return atomic_write(
        path,
        lambda tmp: mx.save_safetensors(tmp, arrays, metadata={_META_KEY: text}),
        suffix=".safetensors",
    )


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, mx.array]]:
    """Read a checkpoint's header and arrays, raising :class:`CheckpointError` if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint file at {str(path)!r}\n{see('checkpoint-unreadable')}"
        )
    try:
        arrays, meta = mx.load(str(path), format="safetensors", return_metadata=True)
    except Exception as error:  # MLX reports truncation and garbage as various errors
        raise CheckpointError(
            f"{str(path)!r} is not a readable safetensors file (truncated or corrupt?): {error}\n"
            + see("checkpoint-unreadable")
        ) from error
    try:
        header = json.loads(meta[_META_KEY])
        if header["format"] != FORMAT:
            raise ValueError(header["format"])
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(
            f"{str(path)!r} is not an ncps_mlx checkpoint\n{see('checkpoint-unreadable')}"
        ) from error
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint format {header['format_version']}; this ncps_mlx "
            f"reads up to {FORMAT_VERSION}: upgrade ncps_mlx\n{see('checkpoint-unreadable')}"
        )
    return header, arrays


def _check_wiring(model: RNN, arrays: dict[str, mx.array], path: str) -> None:
    for key, expected in _wiring_arrays(model).items():
        if key in arrays and not mx.array_equal(arrays[key], expected).item():
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
    if problems:
        raise CheckpointError(
            f"{path!r} does not fit the model:\n  "
            + "\n  ".join(problems)
            + f"\n{see('checkpoint-mismatch')}"
        )
    model.update(tree_unflatten(list(weights.items())))


def load(path: str | os.PathLike) -> RNN:
    """Rebuild the model saved at ``path`` with its weights (in their saved dtype)."""
    header, arrays = read_checkpoint(path)
    model = model_from_config(header["model"])
    _check_wiring(model, arrays, str(path))
    _assign(model, arrays, str(path))
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
    """Load a checkpoint already read by :func:`read_checkpoint` into ``model``."""
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
