"""Bring weights over from ``ncps`` (PyTorch, 1.0.1) and back.

The parameters of [`CfC`][ncps_mlx.CfC] and [`LTC`][ncps_mlx.LTC] carry the same names
as the reference's ``state_dict()`` keys, with two exceptions handled here: the backbone
of a CfC is a list of linear layers (the reference's ``nn.Sequential`` also numbers its
activations and dropouts), and the wiring masks are not parameters here (they are
derived from the wiring; the reference stores them as frozen parameters). Masks in a
state dict are checked against the model's wiring instead of loaded.
"""

from collections.abc import Mapping
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from .cells import CfCCell, LTCCell, WiredCfCCell
from .errors import StateDictError, see
from .rnn import RNN


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; torch itself is never imported here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _backbone_index(cell: CfCCell, layer: int) -> int:
    # nn.Sequential(Linear, act, [Linear, act, (Dropout)] ...) in the reference.
    per_layer = 3 if cell.backbone_dropout > 0 else 2
    return 0 if layer == 0 else 2 + (layer - 1) * per_layer


def _renumber_backbone(model: RNN, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Number the backbone keys of ``values`` as ``model``'s own ncps layout would.

    A Dropout after each hidden layer shifts the reference's Linear indices (0, 2, 5 with
    dropout, 0, 2, 4 without), and dropout is no part of the weights: a model trained with
    it loads into one without, for inference, and back.
    """
    prefix = "rnn_cell.backbone."
    indices = sorted({int(key.split(".")[2]) for key in values if key.startswith(prefix)})
    if not isinstance(model.rnn_cell, CfCCell) or not indices:
        return values
    target = {index: _backbone_index(model.rnn_cell, layer) for layer, index in enumerate(indices)}

    def renumbered(key: str) -> str:
        if not key.startswith(prefix):
            return key
        parts = key.split(".")
        parts[2] = str(target[int(parts[2])])
        return ".".join(parts)

    return {renumbered(key): value for key, value in values.items()}


def _ncps_key(model: RNN, key: str) -> str:
    parts = key.split(".")
    if parts[:2] == ["rnn_cell", "backbone"]:
        parts[2] = str(_backbone_index(model.rnn_cell, int(parts[2])))
    return ".".join(parts)


def _ncps_masks(model: RNN) -> dict[str, np.ndarray]:
    """The frozen mask tensors the reference stores, as this model's wiring implies."""
    cell = model.rnn_cell
    if isinstance(cell, LTCCell):
        return {
            "rnn_cell.sparsity_mask": np.array(cell.sparsity_mask),
            "rnn_cell.sensory_sparsity_mask": np.array(cell.sensory_sparsity_mask),
        }
    if isinstance(cell, WiredCfCCell):
        if cell.strict_wiring:
            raise StateDictError(
                "a CfC with strict_wiring=True has no ncps equivalent: ncps masks only ff1/ff2 "
                f"and connects each layer densely to itself\n{see('state-dict-mismatch')}"
            )
        return {
            f"rnn_cell.layer_{i}.sparsity_mask": np.array(layer.head_masks["ff1"])
            for i, layer in enumerate(cell.layers)
        }
    if "ff1" in cell.head_masks:
        return {"rnn_cell.sparsity_mask": np.array(cell.head_masks["ff1"])}
    return {}


def _check_masks(model: RNN, state_dict: dict[str, np.ndarray], problems: list[str]) -> None:
    for key, expected in _ncps_masks(model).items():
        if key not in state_dict:
            problems.append(f"missing key {key!r}")
        elif state_dict[key].shape != expected.shape:
            problems.append(
                f"{key!r} has shape {state_dict[key].shape}, the model's wiring gives "
                f"{expected.shape}"
            )
        elif not np.array_equal(np.abs(state_dict[key]), expected):
            problems.append(
                f"{key!r} disagrees with the model's wiring in "
                f"{int(np.sum(np.abs(state_dict[key]) != expected))} entries (was the ncps "
                "model built with another wiring seed or input size?)"
            )


def load_ncps_state_dict(model: RNN, state_dict: Mapping[str, Any]) -> RNN:
    """Load the ``state_dict()`` of an ncps (PyTorch) ``CfC``/``LTC`` into ``model``.

    ``model`` must be the matching ncps_mlx layer (same constructor arguments, same wiring
    seed). Values may be numpy arrays or torch tensors. Nothing is loaded unless every key
    matches: the error lists every missing, unexpected or mis-shaped key, and every mask
    that disagrees with the model's wiring.

    Returns:
        The model, for chaining.

    Raises:
        StateDictError: When the state dict does not fit the model.
    """
    values = _renumber_backbone(model, {key: _to_numpy(value) for key, value in state_dict.items()})
    params = dict(tree_flatten(model.parameters()))
    problems: list[str] = []
    _check_masks(model, values, problems)
    updates = []
    for key, param in params.items():
        ncps_key = _ncps_key(model, key)
        if ncps_key not in values:
            problems.append(f"missing key {ncps_key!r}")
        elif values[ncps_key].shape != tuple(param.shape):
            problems.append(
                f"{ncps_key!r} has shape {values[ncps_key].shape}, the model expects "
                f"{tuple(param.shape)}"
            )
        else:
            updates.append((key, mx.array(values[ncps_key]).astype(param.dtype)))
    known = {_ncps_key(model, key) for key in params} | set(_ncps_masks(model))
    problems += [f"unexpected key {key!r}" for key in values if key not in known]
    if problems:
        raise StateDictError(
            f"the state dict does not fit this {type(model).__name__}:\n  "
            + "\n  ".join(problems)
            + f"\n{see('state-dict-mismatch')}"
        )
    model.update(tree_unflatten(updates))
    return model


def to_ncps_state_dict(model: RNN) -> dict[str, np.ndarray]:
    """The model's weights as an ncps (PyTorch) ``state_dict``, as numpy arrays.

    Load it into the matching ncps model with
    ``torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``.
    """
    state = {
        _ncps_key(model, key): np.array(value.astype(mx.float32))
        for key, value in tree_flatten(model.parameters())
    }
    state.update(_ncps_masks(model))
    return state
