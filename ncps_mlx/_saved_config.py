"""A saved model's config checked before anything is built from it.

A checkpoint's config says which constructor to call with which arguments; a model
built from a crafted config could take hours (a wiring of 30000 units) or abort the
process (a million backbone layers) before its weights are ever compared. So every
argument is checked first against the constructor's signature (names, strict types,
choices), every size that costs memory against the tensors the file holds (a unit or an
input feature has at least one stored number), and the sizes that cost only time
against [`LoadLimits`][ncps_mlx.LoadLimits].
"""

import inspect
import math
import typing
from dataclasses import dataclass, fields
from typing import Any

from .cells.activations import ACTIVATIONS
from .cells.base import CELLS, Cell
from .cells.solvers import SOLVERS
from .wirings import _WIRING_CLASSES

# Sizes of the model that each imply at least one stored number per unit.
_STORED_SIZES = ("input_size", "units", "backbone_units", "proj_size")
_CHOICES = {"activation": tuple(ACTIVATIONS), "solver": tuple(SOLVERS)}
# The neuron count of a wiring config, by class; the others have "units".
_WIRING_UNITS = {
    "NCP": lambda args: args["inter_neurons"] + args["command_neurons"] + args["motor_neurons"]
}
# A registered cell whose class keeps this builds itself as cls(**config).
_DEFAULT_FROM_CONFIG = Cell.from_config.__func__


@dataclass(frozen=True)
class LoadLimits:
    """Upper bounds on the sizes a loaded config may ask for that the file's tensors do
    not bound: they cost time at every step, not stored weights.

    The defaults are far beyond the published models (6 unfolds, 4 backbone layers);
    pass larger ones to [`ncps_mlx.load`][ncps_mlx.load] for a model that needs them.

    Args:
        ode_unfolds (int): An LTC's solver sub-steps per time step. Default: ``1024``.
        backbone_layers (int): A CfC's backbone layers. Default: ``64``.
    """

    ode_unfolds: int = 1024
    backbone_layers: int = 64


def check_model_config(config: Any, shapes: dict[str, list[int]], limits: LoadLimits) -> list[str]:
    """Every problem of a saved model ``config``, given the shapes of the file's tensors.

    Returns:
        One line per problem; empty when the model may be built.
    """
    from .rnn import MODELS, RNN

    problems: list[str] = []
    if not isinstance(config, dict):
        return [f"the model config is a {type(config).__name__}, not an object"]
    name = config.get("class_name")
    if name == "RNN":
        _check_arguments("model", RNN, _without(config, "class_name"), problems, skip=("cell",))
        _check_cell(config.get("cell"), problems)
        return problems
    if name not in MODELS:
        return [f"model class_name {name!r} is not one of {[*MODELS, 'RNN']}"]
    arguments = _without(config, "class_name")
    _check_arguments("model", MODELS[name], arguments, problems, skip=("units",))
    units = arguments.get("units")
    if isinstance(units, dict):
        _check_wiring(units, shapes, arguments.get("input_size"), problems)
    elif not _is_count(units):
        problems.append(f"model.units: got {units!r}; expected an int >= 1 or a wiring")
    elif name == "LTC":  # an int means a fully connected wiring, which the file holds
        _check_matrices(units, arguments.get("input_size"), shapes, problems)
    _check_sizes(arguments, shapes, limits, problems)
    return problems


def _without(config: dict, *keys: str) -> dict:
    return {key: value for key, value in config.items() if key not in keys}


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _stored_numbers(shapes: dict[str, list[int]]) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def _check_sizes(
    arguments: dict, shapes: dict[str, list[int]], limits: LoadLimits, problems: list[str]
) -> None:
    stored = _stored_numbers(shapes)
    for key in _STORED_SIZES:
        value = arguments.get(key)
        if _is_count(value) and value > stored:
            problems.append(
                f"model.{key}: {value} is more than the {stored} numbers the file stores"
            )
    for limit in fields(limits):
        value = arguments.get(limit.name)
        bound = getattr(limits, limit.name)
        if _is_count(value) and value > bound:
            problems.append(
                f"model.{limit.name}: {value} is above the limit {bound}; pass "
                f"limits=LoadLimits({limit.name}=...) to load it if it is meant"
            )


def _check_wiring(
    wiring: dict, shapes: dict[str, list[int]], input_size: Any, problems: list[str]
) -> None:
    """A wiring config: its class's arguments, and its sizes equal to the saved matrices."""
    name = wiring.get("class_name")
    if name not in _WIRING_CLASSES:
        problems.append(f"model.units: wiring class {name!r} is not one of {[*_WIRING_CLASSES]}")
        return
    arguments = _without(wiring, "class_name", "input_dim")
    before = len(problems)
    if name == "Wiring":  # a plain wiring stores its matrices in the config
        _check_plain_wiring(arguments, problems)
    else:
        _check_arguments(f"model.units ({name})", _WIRING_CLASSES[name], arguments, problems)
    if len(problems) > before:
        return
    units = _WIRING_UNITS.get(name, lambda args: args["units"])(arguments)
    _check_matrices(units, wiring.get("input_dim"), shapes, problems)
    if wiring.get("input_dim") != input_size:
        problems.append(
            f"model.units.input_dim: {wiring.get('input_dim')!r} differs from the model's "
            f"input_size {input_size!r}"
        )
    # Each random draw costs time at build, not memory: as many as the matrix has entries.
    draws = arguments.get("recurrent_command_synapses")
    if _is_count(draws) and draws > units * units:
        problems.append(
            f"model.units.recurrent_command_synapses: {draws} draws for {units * units} "
            "possible synapses"
        )


def _check_matrices(
    units: int, input_dim: Any, shapes: dict[str, list[int]], problems: list[str]
) -> None:
    """A wiring of ``units`` neurons is built only if the file holds its matrices."""
    expected = {
        "wiring.adjacency_matrix": [units, units],
        "wiring.sensory_adjacency_matrix": [input_dim, units],
    }
    for key, shape in expected.items():
        saved = shapes.get(key)
        if saved != shape:
            problems.append(f"{key}: the file holds shape {saved}, the config implies {shape}")


def _check_plain_wiring(arguments: dict, problems: list[str]) -> None:
    for key in ("units", "output_dim"):
        if not _is_count(arguments.get(key)):
            problems.append(f"model.units.{key}: got {arguments.get(key)!r}; expected an int >= 1")
    unknown = set(arguments) - {
        "units",
        "output_dim",
        "adjacency_matrix",
        "sensory_adjacency_matrix",
    }
    problems += [f"model.units.{key}: unknown key" for key in sorted(unknown)]


def _check_cell(cell: Any, problems: list[str]) -> None:
    if not isinstance(cell, dict) or not isinstance(cell.get("config", {}), dict):
        problems.append("model.cell: expected {'class_name': ..., 'config': {...}}")
        return
    cls = CELLS.get(cell.get("class_name"))
    # A cell that builds itself its own way checks its own config.
    if cls is not None and cls.from_config.__func__ is _DEFAULT_FROM_CONFIG:
        _check_arguments(f"model.cell ({cls.__name__})", cls, cell.get("config", {}), problems)


def _check_arguments(
    where: str, cls: type, arguments: dict, problems: list[str], skip: tuple = ()
) -> None:
    """``arguments`` against ``cls``'s constructor: known names, required ones present,
    each of its annotated type (a bool is not an int, a string not a bool)."""
    from .config._fields import _is_kind, hint_kind

    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve: names are still checked
        hints = {}
    parameters = {
        name: parameter
        for name, parameter in list(inspect.signature(cls).parameters.items())
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }
    for name in arguments:
        if name not in parameters:
            problems.append(f"{where}.{name}: unknown argument of {cls.__name__}")
    for name, parameter in parameters.items():
        if name in skip:
            continue
        if name not in arguments:
            if parameter.default is parameter.empty:
                problems.append(f"{where}.{name}: missing")
            continue
        value = arguments[name]
        kind, choices, nullable = hint_kind(hints.get(name))
        choices = _CHOICES.get(name, choices)
        if value is None and (nullable or parameter.default is None):
            continue
        if not _is_kind(value, kind) or (kind == "number" and not math.isfinite(value)):
            problems.append(f"{where}.{name}: got {value!r}; expected {kind}")
        elif choices is not None and value not in choices:
            problems.append(f"{where}.{name}: got {value!r}; expected one of {list(choices)}")
