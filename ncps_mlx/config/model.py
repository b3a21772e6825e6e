"""``[model]``: the class, its units or wiring, and the defaults that fit the data."""

from __future__ import annotations

import dataclasses
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from ..cells.activations import ACTIVATIONS
from ..cells.solvers import SOLVERS
from ..rnn import MODELS, RNN
from ._fields import Problems, Table, blame, read_fields, signature_args
from .build import WIRINGS, build_model
from .resolved import DataInfo, ModelConfig
from .summary import counted

WIRING_OUTPUT_KEY = {
    "AutoNCP": "output_size",
    "NCP": "motor_neurons",
    "FullyConnected": "output_dim",
    "Random": "output_dim",
}
"""The constructor argument that sets how many outputs (motor neurons) a wiring has, by
wiring class; validation fills it in from the data when the config leaves it out."""
# Choices the model classes check themselves, listed here so a typo gets a suggestion.
_MODEL_CHOICES = {"activation": tuple(sorted(ACTIVATIONS)), "solver": tuple(sorted(SOLVERS))}


def validate_model(table: Table, info: DataInfo | None) -> tuple[ModelConfig | None, Any]:
    """Check the `[model]` table, fit its defaults to the data, and build the model.

    Args:
        table: The `[model]` table; its problems are added to `table.problems`.
        info: What the data looks like; None when `[data]` could not be resolved, and
            then the model is only checked, not built.

    Returns:
        `(config, model)`: the resolved section with its parameter count and the model
        built from it, or `(None, None)` when there is a problem or no data to fit.
    """
    problems = table.problems
    before = len(problems)
    keys = read_fields(table, ModelConfig, finish=False)  # the other keys are the class's
    kind, units, wiring_raw = keys["type"], keys["units"], keys["wiring"]
    kwargs = _model_kwargs(table, MODELS.get(kind), info)
    table.finish()
    if table.present("units") and table.present("wiring"):
        problems.add("model.wiring", "both units and wiring are set", "keep one of them")
    elif not table.present("units") and not table.present("wiring"):
        problems.add("model.units", "missing", "set units = <int> or add a [model.wiring] table")
    wiring = None
    if wiring_raw is not None:
        wiring = _wiring_args(Table("model.wiring", wiring_raw, problems))
    if len(problems) > before or info is None:
        return None, None
    _fit_to_data(kind, kwargs, wiring, units, info, problems)
    if len(problems) > before:
        return None, None
    config = ModelConfig(type=kind, units=units, wiring=wiring, kwargs=kwargs, parameters=0)
    model = _try_build(config, info, problems)
    if model is None:
        return None, None
    parameters = sum(value.size for _, value in tree_flatten(model.parameters()))
    return dataclasses.replace(config, parameters=int(parameters)), model


def _model_kwargs(table: Table, cls: type[RNN] | None, info: DataInfo | None) -> dict[str, Any]:
    """The class's other constructor arguments; the data decides two of them."""
    if cls is None:
        table.accept_any()
        return {}
    features = f"{info.input_size} features" if info is not None else "its features"
    fixed = {
        "input_size": f"it is taken from the data ({features})",
        "batch_first": "fit trains on batch-first data, so it is always true",
    }
    for key, why in fixed.items():
        table.known.append(key)
        if table.present(key):
            table.problems.add(f"model.{key}", why, "remove it")
    skip = ("self", "units", *fixed)
    return signature_args(table, cls, skip=skip, choices=_MODEL_CHOICES)


def _wiring_args(table: Table) -> dict[str, Any] | None:
    kind = table.get("type", "str", required=True, choices=WIRINGS)
    if kind is None:
        table.accept_any()
        return None
    output_key = WIRING_OUTPUT_KEY[kind]
    args = signature_args(table, WIRINGS[kind], skip=("self",), optional=(output_key,))
    table.finish()
    return {"type": kind, **args}


def _fit_to_data(
    kind: str,
    kwargs: dict[str, Any],
    wiring: dict[str, Any] | None,
    units: int | None,
    info: DataInfo,
    problems: Problems,
) -> None:
    """Fill in the defaults that make the model's output match the data's targets."""
    targets = "per step" if info.per_step else "per sequence"
    given = kwargs.setdefault("return_sequences", info.per_step)
    if given != info.per_step:
        problems.add(
            "model.return_sequences",
            f"is {str(given).lower()}, but the targets are {targets}",
            f"set it to {str(info.per_step).lower()} or remove it",
        )
    if wiring is not None and _outputs_every_neuron(kind, wiring):
        if not _check_every_neuron_output(wiring, problems):
            return
        units = wiring.get("units")
    elif wiring is not None:
        if "proj_size" not in kwargs:
            wiring.setdefault(WIRING_OUTPUT_KEY[wiring["type"]], info.output_size)
        return
    if "proj_size" not in kwargs and units is not None and units != info.output_size:
        kwargs["proj_size"] = info.output_size


def _outputs_every_neuron(kind: str, wiring: dict[str, Any]) -> bool:
    # A wired CfC outputs its wiring's last layer (as ncps' WiredCfCCell does): the motor
    # layer of an NCP, but every neuron of a single-layer wiring, whatever its output_dim.
    return kind == "CfC" and wiring["type"] in ("FullyConnected", "Random")


def _check_every_neuron_output(wiring: dict[str, Any], problems: Problems) -> bool:
    output_dim, units = wiring.get("output_dim"), wiring.get("units")
    if output_dim is None or output_dim == units:
        return True
    problems.add(
        "model.wiring.output_dim",
        f"a CfC outputs all {units} neurons of a {wiring['type']} wiring, so output_dim "
        f"{output_dim} would not be its output size",
        "remove output_dim; model.proj_size (default: the data's output size) maps the "
        "neurons to the outputs",
    )
    return False


def _outputs(count: int) -> str:
    return counted(count, "output")


def _output_needs(info: DataInfo) -> str:
    if info.classification:
        return f"{_outputs(info.output_size)} (one per class)"
    return f"{_outputs(info.output_size)} (the targets' last axis)"


def _try_build(config: ModelConfig, info: DataInfo, problems: Problems) -> RNN | None:
    """Build the model as the run will, turning constructor errors into problems."""
    try:
        model = build_model(config, info)
    except ValueError as error:
        message = str(error)
        where = blame("model.wiring", message, config.wiring or {})
        if where != "model.wiring":  # the message names a wiring argument
            problems.add(where, message, _wiring_hint(config, info, where))
        else:
            problems.add(blame("model", message, config.kwargs), message)
        return None
    if model.output_size != info.output_size:
        problems.add(
            "model",
            f"the model has {_outputs(model.output_size)} but the data needs {_output_needs(info)}",
            _output_fix(config, info),
        )
        return None
    return model if _computes_declared_width(model, problems) else None


def _computes_declared_width(model: RNN, problems: Problems) -> bool:
    """Run one step: a model whose output differs from its output_size would fail late."""
    y, _ = model(mx.zeros((1, 1, model.input_size)))
    if y.shape[-1] == model.output_size:
        return True
    problems.add(
        "model",
        f"the model declares {_outputs(model.output_size)} but computes {y.shape[-1]}",
        "change the wiring or set model.proj_size",
    )
    return False


def _wiring_hint(config: ModelConfig, info: DataInfo, where: str) -> str:
    output_key = WIRING_OUTPUT_KEY[config.wiring["type"]]
    if where.endswith(output_key) and config.wiring[output_key] == info.output_size:
        return (
            f"the data needs {_output_needs(info)}: give the wiring more units, or set "
            "model.proj_size and a smaller wiring output"
        )
    return "fix [model.wiring]"


def _output_fix(config: ModelConfig, info: DataInfo) -> str:
    size = info.output_size
    if config.wiring is not None and not _outputs_every_neuron(config.type, config.wiring):
        key = WIRING_OUTPUT_KEY[config.wiring["type"]]
        return f"set model.wiring.{key} = {size} or model.proj_size = {size}"
    return f"set model.proj_size = {size} (or remove it: it defaults to the data's output size)"
