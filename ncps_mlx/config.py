"""Config-driven training runs: one TOML file says what to train, on what, and where.

:func:`read_config` (or :func:`load_config` then :func:`validate_config`) checks the whole
file before anything is computed or written, and reports every problem at once in one
:class:`ConfigError`; :func:`run_config` then trains with
:func:`~ncps_mlx.training.fit` and saves the results. From the shell::

    ncps-mlx validate run.toml        # what would run, or the list of problems (exit 2)
    ncps-mlx train run.toml [--resume] [--out DIR]

A complete file (every key but ``seed``, ``[data]``, ``[model]`` and ``output.dir`` is
optional; the values shown are the defaults unless marked)::

    seed = 0                         # data split, data generation, weights, data order

    [data]
    name = "irregular_oscillator"    # a generated task or a UEA set; or instead:
    # path = "series.npz"            # arrays x, y [, timespans, mask, classes]
    #                                # [, val_x, val_y, val_timespans, val_mask]
    options = { num_sequences = 256, seq_len = 64, noise = 0.05 }   # example values
    validation_fraction = 0.2        # generated and .npz data (0: no validation)
    # validation = "test"            # UEA sets: "test" (their test split) or "none"

    [model]
    type = "CfC"                     # "CfC" or "LTC"
    # units = 32                     # an int, or a wiring table:
    mode = "default"                 # any other constructor argument of the class
    [model.wiring]
    type = "AutoNCP"                 # "AutoNCP", "NCP", "FullyConnected" or "Random"
    units = 24                       # plus the wiring's constructor arguments
    sparsity_level = 0.5

    [training]
    epochs = 10
    batch_size = 32
    loss = "mse"                     # default: "cross_entropy" for class labels
    metrics = ["mae"]                # default: ["accuracy"] for class labels, else []
    optimizer = "adam"               # "adam", "adamw", "sgd" or "rmsprop"
    learning_rate = 0.001
    # weight_decay = 0.01            # adamw (default 0.01) and sgd (default 0)
    # momentum = 0.9                 # sgd (default 0)
    clip_norm = 1.0                  # clip the gradients' global norm (default: off)
    shuffle = true
    # memory_budget_mb = 4096        # MiB a training step may use (default: the device's)
    [training.schedule]              # or schedule = "cosine"; default "none"
    type = "cosine"                  # "none", "cosine", "exponential" or "step"
    end_learning_rate = 1e-5
    [training.early_stopping]        # a table turns early stopping on
    monitor = "val_loss"             # "loss", "val_loss" or "val_<metric>"
    patience = 5
    min_delta = 0.0
    mode = "auto"                    # "min", "max" or "auto"

    [output]
    dir = "runs/oscillator"          # required
    resume = false                   # continue from dir/checkpoints/last.safetensors
    progress = true                  # a progress bar per epoch (needs tqdm)
    monitor = false                  # record hardware figures to dir/monitor.jsonl
    export_coreml = false            # also write dir/model.mlpackage (needs coremltools)

Reference:

* ``[data]``: exactly one of ``name`` and ``path``.

  - ``name``: a generated task, ``sine_waves``, ``irregular_oscillator`` or
    ``spring_mass_control`` (:mod:`ncps_mlx.datasets`), whose keyword arguments go in
    ``options`` (``options.seed`` defaults to the top-level ``seed``); or a UCR/UEA set
    shipped with aeon (:data:`~ncps_mlx.datasets.SHIPPED`, e.g. ``"JapaneseVowels"``),
    whose ``options`` are those of :func:`~ncps_mlx.datasets.load_uea` (``standardize``).
  - ``path``: an ``.npz`` file, relative to the config file's folder. ``x`` is (N, T, F)
    floats; ``y`` is per-sequence (N,) int labels or (N, O) floats, or per-step (N, T)
    int labels or (N, T, O) floats; ``timespans`` (N, T) and ``mask`` (N, T, bool,
    padding at the end) are optional; ``classes`` names the labels. ``val_*`` arrays give
    the validation data (then ``validation_fraction`` must be left out).
  - ``validation_fraction`` in [0, 1): the share of the sequences held out for
    validation, drawn with ``seed``.

* ``[model]``: ``type``; ``units`` (int) or a ``[model.wiring]`` table; every other
  argument of :class:`~ncps_mlx.CfC` or :class:`~ncps_mlx.LTC` except ``input_size`` (the
  data's feature count) and ``batch_first`` (always true). Defaults that make the model
  fit the data: ``return_sequences`` is true for per-step targets and false for
  per-sequence ones; with int ``units`` that differ from the data's output size,
  ``proj_size`` is that output size; a wiring's output count (``output_size`` of AutoNCP,
  ``output_dim`` of FullyConnected and Random, ``motor_neurons`` of NCP) is the data's
  output size unless ``proj_size`` is set. The output size is the number of classes for
  integer labels, the last axis of ``y`` otherwise.

* ``[training]``: ``epochs`` and ``batch_size`` ints >= 1; ``loss`` from
  :data:`~ncps_mlx.training.losses.LOSSES`; ``metrics`` from
  :data:`~ncps_mlx.training.losses.METRICS`, evaluated on the validation data;
  ``learning_rate`` > 0; ``clip_norm`` > 0. ``schedule`` (a step is one batch):

  - ``cosine``: from ``learning_rate`` to ``end_learning_rate`` (default 0) over
    ``decay_steps`` (default: every step of the run), then constant.
  - ``exponential``: multiplies the rate by a constant each step so that it reaches
    ``end_learning_rate`` (default ``learning_rate / 100``) after ``decay_steps``
    (default: every step of the run).
  - ``step``: multiplies the rate by ``decay_rate`` (default 0.5) every ``step_size``
    steps (default: a third of the run).

* ``[output]``: ``dir`` is relative to the current folder (as ``--out`` is). A folder that
  already holds a run is refused unless ``resume`` is true. A run writes
  ``checkpoints/`` (``last.safetensors``, ``best.safetensors``, ``metrics.jsonl``, see
  :func:`~ncps_mlx.training.fit`), ``model.safetensors`` (the final weights, read with
  :func:`ncps_mlx.load`), ``metrics.json`` (final figures, epochs run, seconds and the
  resolved config), and ``monitor.jsonl`` and ``model.mlpackage`` when asked for (the
  Core ML package has kind ``"step"``, with the ``dt`` input when the data has timespans).

Problems read ``section.key: what is wrong; what to do``, e.g.
``training.optimizer: got 'adamm'; did you mean 'adam'? choose one of adam, adamw,
rmsprop, sgd``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import inspect
import json
import math
import re
import sys
import time
import types
import typing
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from . import datasets
from .cells.activations import ACTIVATIONS
from .cells.solvers import SOLVERS
from .errors import ConfigError, NCPSError
from .rnn import MODELS, RNN
from .training.losses import CLASSIFICATION_LOSSES, LOSSES, METRICS
from .wirings import NCP, AutoNCP, FullyConnected, Random, Wiring

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as the tomli package
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

GENERATORS: dict[str, Callable[..., datasets.SequenceData]] = {
    "sine_waves": datasets.sine_waves,
    "irregular_oscillator": datasets.irregular_oscillator,
    "spring_mass_control": datasets.spring_mass_control,
}
WIRINGS: dict[str, type[Wiring]] = {
    "AutoNCP": AutoNCP,
    "NCP": NCP,
    "FullyConnected": FullyConnected,
    "Random": Random,
}
# The constructor argument that sets how many outputs (motor neurons) a wiring has.
WIRING_OUTPUT_KEY = {
    "AutoNCP": "output_size",
    "NCP": "motor_neurons",
    "FullyConnected": "output_dim",
    "Random": "output_dim",
}
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("none", "cosine", "exponential", "step")
NPZ_ARRAYS = ("x", "y", "timespans", "mask", "classes")
DEFAULT_VALIDATION_FRACTION = 0.2
CHECKPOINTS = "checkpoints"
# Files whose presence means the output folder already holds a run.
RUN_FILES = (CHECKPOINTS, "model.safetensors", "metrics.json")
# Choices the model classes check themselves, listed here so a typo gets a suggestion.
_MODEL_CHOICES = {"activation": tuple(sorted(ACTIVATIONS)), "solver": tuple(sorted(SOLVERS))}
# The keys of training.schedule each schedule type takes.
_SCHEDULE_KEYS = {
    "none": (),
    "cosine": ("decay_steps", "end_learning_rate"),
    "exponential": ("decay_steps", "end_learning_rate"),
    "step": ("decay_rate", "step_size"),
}
_MISSING = object()


# -- the resolved config --------------------------------------------------------------


@dataclass(frozen=True)
class DataInfo:
    """What validation learned about the data: enough to build and check the model."""

    input_size: int
    output_size: int  # classes for integer labels, the last axis of y otherwise
    classification: bool
    per_step: bool
    seq_len: int
    train_size: int
    val_size: int
    timespans: bool
    mask: bool


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: ``source`` is ``"generated"``, ``"uea"`` or ``"npz"``; ``validation``
    is ``"test"`` (UEA), ``"fraction"``, ``"file"`` (``val_*`` arrays) or ``"none"``."""

    source: str
    name: str | None
    path: Path | None
    options: dict[str, Any]
    validation: str
    validation_fraction: float
    info: DataInfo


@dataclass(frozen=True)
class ModelConfig:
    """``[model]`` with the defaults drawn from the data filled in."""

    type: str
    units: int | None
    wiring: dict[str, Any] | None  # {"type": ..., constructor arguments}
    kwargs: dict[str, Any]
    parameters: int


@dataclass(frozen=True)
class ScheduleConfig:
    """``training.schedule`` with every number resolved."""

    type: str = "none"
    decay_steps: int | None = None
    end_learning_rate: float | None = None
    decay_rate: float | None = None
    step_size: int | None = None


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """``training.early_stopping``: the arguments of ``EarlyStopping``."""

    monitor: str
    patience: int
    min_delta: float
    mode: str


@dataclass(frozen=True)
class TrainingConfig:
    """``[training]``; ``steps_per_epoch`` is derived from the data and batch size."""

    epochs: int
    batch_size: int
    loss: str
    metrics: tuple[str, ...]
    optimizer: str
    learning_rate: float
    weight_decay: float | None
    momentum: float | None
    schedule: ScheduleConfig
    clip_norm: float | None
    shuffle: bool
    early_stopping: EarlyStoppingConfig | None
    memory_budget_mb: float | None
    steps_per_epoch: int


@dataclass(frozen=True)
class OutputConfig:
    """``[output]``."""

    dir: Path
    resume: bool
    progress: bool
    monitor: bool
    export_coreml: bool


@dataclass(frozen=True)
class Config:
    """A validated run config: what :func:`run_config` needs, checked."""

    seed: int
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig
    output: OutputConfig
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as JSON-compatible values."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def summary(self) -> str:
        """A few lines saying what :func:`run_config` would do."""
        return "\n".join(
            [
                f"data:     {_describe_data(self.data)}",
                f"model:    {_describe_model(self.model)}",
                f"training: {_describe_training(self.training)}",
                f"output:   {_describe_output(self.output)}",
            ]
        )


# -- reading --------------------------------------------------------------------------


def load_config(path: str | Path) -> dict[str, Any]:
    """Parse a TOML run config into plain Python values (nothing is checked yet).

    Raises:
        ConfigError: The file is missing or is not valid TOML (with the line).
        ImportError: On Python 3.10 without the ``tomli`` package.
    """
    if tomllib is None:
        raise ImportError(
            "reading TOML configs on Python 3.10 needs the tomli package: pip install tomli"
        )
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        problem = f"config: cannot read {str(path)!r} ({error.strerror}); give an existing file"
        raise ConfigError([problem], str(path)) from error
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        match = re.search(r"at line (\d+)", str(error))
        line = f", line {match.group(1)}" if match else ""
        problem = f"config: TOML syntax error in {path}{line}: {error}; fix the syntax"
        raise ConfigError([problem], str(path)) from None


def read_config(
    path: str | Path, *, output_dir: str | Path | None = None, resume: bool | None = None
) -> Config:
    """Load and validate a config file; ``output_dir`` and ``resume`` override ``[output]``.

    Paths in ``[data]`` are relative to the file's folder.

    Raises:
        ConfigError: Every problem found, before anything is computed or written.
    """
    raw = load_config(path)
    output = raw.setdefault("output", {})
    if isinstance(output, dict):  # anything else is reported by validate_config
        if output_dir is not None:
            output["dir"] = str(output_dir)
        if resume is not None:
            output["resume"] = resume
    return validate_config(raw, base_dir=Path(path).parent, source=str(path))


# -- checking single values -----------------------------------------------------------


class _Problems(list):
    """The problems found so far, each ``where: what; fix``."""

    def add(self, where: str, what: str, fix: str = "") -> None:
        self.append(f"{where}: {what}" + (f"; {fix}" if fix else ""))


_KIND_NAMES = {
    "int": "an int",
    "number": "a number",
    "bool": "true or false",
    "str": "a string",
    "table": "a table",
    "list[str]": "a list of strings",
    "any": "a value",
}


def _is_kind(value: Any, kind: str) -> bool:
    # TOML's booleans are Python bools, which are ints: never let one pass as a number.
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    checks = {
        "int": number and isinstance(value, int),
        "number": number,
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "table": isinstance(value, dict),
        "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "any": True,
    }
    return checks[kind]


def _show(value: Any) -> str:
    """A value as the user wrote it, with its TOML type."""
    names = {bool: "a boolean", int: "an int", float: "a float", str: "a string"}
    names.update({dict: "a table", list: "an array"})
    shown = str(value).lower() if isinstance(value, bool) else repr(value)
    if isinstance(value, dict):
        shown = "{...}"
    return f"{shown} ({names.get(type(value), type(value).__name__)})"


def _bounds_text(bounds: dict[str, float]) -> str:
    low = [f">= {bounds['min']}"] if "min" in bounds else []
    low += [f"> {bounds['gt']}"] if "gt" in bounds else []
    high = [f"<= {bounds['max']}"] if "max" in bounds else []
    high += [f"< {bounds['lt']}"] if "lt" in bounds else []
    if low and high:
        left = f"[{bounds['min']}" if "min" in bounds else f"({bounds['gt']}"
        right = f"{bounds['max']}]" if "max" in bounds else f"{bounds['lt']})"
        return f"in {left}, {right}"
    return " ".join(low + high)


def _in_bounds(value: float, bounds: dict[str, float]) -> bool:
    if not math.isfinite(value):
        return False
    tests = {
        "min": lambda b: value >= b,
        "gt": lambda b: value > b,
        "max": lambda b: value <= b,
        "lt": lambda b: value < b,
    }
    return all(tests[name](bound) for name, bound in bounds.items())


def _expected(kinds: tuple[str, ...], choices: Iterable | None, bounds: dict) -> str:
    if choices is not None:
        return "one of " + ", ".join(str(choice) for choice in choices)
    text = " or ".join(_KIND_NAMES[kind] for kind in kinds)
    return f"{text} {_bounds_text(bounds)}" if bounds else text


def _closest(value: str, choices: Iterable[str]) -> str | None:
    """The choice a typo most likely meant, ignoring case."""
    by_lower = {str(choice).lower(): str(choice) for choice in choices}
    match = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None


def _choose(value: str, choices: Iterable[Any], listing: str = "choose one of") -> str:
    choices = [str(choice) for choice in choices]
    match = _closest(value, choices)
    hint = f"did you mean {match!r}? " if match else ""
    return f"{hint}{listing} {', '.join(choices)}"


class _Table:
    """One TOML table under validation: typed reads; keys never read are unknown."""

    def __init__(self, where: str, raw: Any, problems: _Problems):
        self.where = where
        self.raw = raw if isinstance(raw, dict) else {}
        self.problems = problems
        self.known: list[str] = []

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(
        self,
        key: str,
        kind: str | tuple[str, ...],
        default: Any = None,
        *,
        required: bool = False,
        choices: Iterable | None = None,
        **bounds: float,
    ) -> Any:
        """The value at ``key``, or ``default`` when it is missing or has a problem."""
        self.known.append(key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        choices = tuple(choices) if choices is not None else None
        if key not in self.raw:
            if required:
                section = kinds == ("table",)
                fix = f"add a [{self.at(key)}] table" if section else f"add {key} = ..."
                self.problems.add(
                    self.at(key), "missing", f"{fix} ({_expected(kinds, choices, bounds)})"
                )
            return default
        value = self.raw[key]
        if not any(_is_kind(value, kind) for kind in kinds):
            self.problems.add(
                self.at(key), f"got {_show(value)}", f"use {_expected(kinds, None, bounds)}"
            )
            return default
        if choices is not None and isinstance(value, str) and value not in choices:
            self.problems.add(self.at(key), f"got {value!r}", _choose(value, choices))
            return default
        if bounds and not isinstance(value, (str, dict, list)) and not _in_bounds(value, bounds):
            self.problems.add(
                self.at(key), f"got {value!r}", f"use {_expected(kinds, None, bounds)}"
            )
            return default
        return value

    def present(self, key: str) -> bool:
        return key in self.raw

    def finish(self) -> None:
        """Report every key that no read asked for."""
        allowed = list(dict.fromkeys(self.known))
        for key in self.raw:
            if key not in allowed:
                fix = _choose(key, allowed, "allowed keys:")
                self.problems.add(self.at(key), "unknown key", fix)


# -- checking arguments against a signature -------------------------------------------


def _hint_kind(hint: Any) -> tuple[str, tuple | None, bool]:
    """``(kind, choices, nullable)`` of a type hint; kind ``"any"`` when not checkable."""
    if hint is None:
        return "any", None, False
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "str", args, False
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in args if arg is not type(None)]
        nullable = len(members) < len(args)
        if len(members) == 1:
            return (*_hint_kind(members[0])[:2], nullable)
        return "any", None, nullable
    return {bool: "bool", int: "int", float: "number", str: "str"}.get(hint, "any"), None, False


def _signature_args(
    table: _Table,
    fn: Callable,
    *,
    skip: Iterable[str] = (),
    optional: Iterable[str] = (),
    choices: Mapping[str, tuple] | None = None,
) -> dict[str, Any]:
    """Read ``fn``'s keyword arguments from ``table``, typed by its annotations.

    Arguments without a default are required unless in ``optional``; a Literal argument
    that also takes ``None`` accepts the string ``"none"`` for it (TOML has no null).
    """
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an unresolvable annotation: fall back to no type checks
        hints = {}
    args = {}
    for name, param in inspect.signature(fn).parameters.items():
        if name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        kind, options, nullable = _hint_kind(hints.get(name))
        options = (choices or {}).get(name, options)
        if nullable and options is not None:
            options = (*options, "none")
        required = param.default is param.empty and name not in optional
        value = table.get(name, kind, _MISSING, required=required, choices=options)
        if value is not _MISSING:
            args[name] = None if nullable and value == "none" else value
    return args


def _blame(where: str, message: str, keys: Iterable[str]) -> str:
    """The most specific ``where.key`` a constructor's error message names."""
    for key in sorted(keys, key=len, reverse=True):
        if re.search(rf"\b{re.escape(key)}\b", message):
            return f"{where}.{key}"
    return where


def _importable(name: str) -> bool:
    # find_spec looks without importing (coremltools takes seconds and prints warnings);
    # a None entry in sys.modules is how a module is blocked, e.g. by tests.
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# -- validation -----------------------------------------------------------------------


def validate_config(
    raw: Mapping[str, Any], *, base_dir: str | Path | None = None, source: str | None = None
) -> Config:
    """Check a parsed config completely and resolve its defaults.

    Nothing is computed or written. The data is inspected only as far as cheap: a
    generated task is drawn once at one sequence, a shipped UEA set is loaded (they are
    small), an ``.npz`` file's array headers and integer labels are read.

    Args:
        raw: What :func:`load_config` returned.
        base_dir: The folder ``data.path`` is relative to; default the current one.
        source: Where ``raw`` came from, for the error message.

    Raises:
        ConfigError: With every problem found, each as ``section.key: ...``.
    """
    problems = _Problems()
    top = _Table("", raw, problems)
    seed = top.get("seed", "int", 0, min=0)
    # A missing or mistyped section is one problem; its keys are then not checked.
    sections = {
        name: top.get(name, "table", None, required=name != "training")
        for name in ("data", "model", "training", "output")
    }
    if not top.present("training"):
        sections["training"] = {}
    top.finish()
    base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
    data = model = built = training = output = None
    if sections["data"] is not None:
        data = _validate_data(_Table("data", sections["data"], problems), seed, base_dir)
    info = data.info if data is not None else None
    if sections["model"] is not None:
        model, built = _validate_model(_Table("model", sections["model"], problems), info)
    if sections["training"] is not None:
        training = _validate_training(_Table("training", sections["training"], problems), info)
    if sections["output"] is not None:
        output = _validate_output(_Table("output", sections["output"], problems))
    if built is not None and training is not None:
        _check_memory(built, training, info, problems)
    if problems:
        raise ConfigError(problems, source)
    return Config(seed, data, model, training, output, source)


# -- [data] ---------------------------------------------------------------------------


def _validate_data(table: _Table, seed: int, base_dir: Path) -> DataConfig | None:
    problems = table.problems
    known = sorted(GENERATORS) + list(datasets.SHIPPED)
    name = table.get("name", "str", choices=known)
    path = table.get("path", "str")
    options = table.get("options", "table", {})
    validation = table.get("validation", "str", choices=("test", "none"))
    fraction = table.get("validation_fraction", "number", min=0, lt=1)
    table.finish()
    if table.present("name") and table.present("path"):
        problems.add("data.path", "both name and path are set", "keep one of them")
        return None
    if not table.present("name") and not table.present("path"):
        problems.add(
            "data.name",
            "missing",
            f"set name (one of {', '.join(known)}) or path (an .npz file)",
        )
        return None
    if name in GENERATORS:
        return _generated_data(name, options, validation, fraction, seed, problems)
    if name is not None:
        return _uea_data(name, options, validation, fraction, problems)
    if path is not None:
        return _npz_data(Path(path), base_dir, options, validation, fraction, problems)
    return None


def _generated_data(
    name: str,
    options: dict,
    validation: str | None,
    fraction: float | None,
    seed: int,
    problems: _Problems,
) -> DataConfig | None:
    if validation is not None:
        problems.add(
            "data.validation",
            "only for UEA sets",
            "use validation_fraction for generated data (0 turns validation off)",
        )
    generator = GENERATORS[name]
    before = len(problems)
    table = _Table("data.options", options, problems)
    args = _signature_args(table, generator)
    table.finish()
    if len(problems) > before:
        return None
    args.setdefault("seed", seed)
    count = args.get(
        "num_sequences", inspect.signature(generator).parameters["num_sequences"].default
    )
    try:
        # One sequence shows the shapes and runs the generator's own argument checks.
        probe = generator(**{**args, "num_sequences": min(count, 1)})
    except ValueError as error:
        problems.add(_blame("data.options", str(error), args), str(error))
        return None
    fraction = DEFAULT_VALIDATION_FRACTION if fraction is None else fraction
    sizes = _split_sizes(count, fraction, problems)
    if sizes is None:
        return None
    info = _info(probe.x.shape, probe.y, None, sizes, probe.timespans, probe.mask)
    mode = "fraction" if info.val_size else "none"
    return DataConfig("generated", name, None, args, mode, fraction, info)


def _uea_data(
    name: str,
    options: dict,
    validation: str | None,
    fraction: float | None,
    problems: _Problems,
) -> DataConfig | None:
    if fraction is not None:
        problems.add(
            "data.validation_fraction",
            "UEA sets are validated on their test split",
            'remove it and set validation = "test" or "none"',
        )
    before = len(problems)
    table = _Table("data.options", options, problems)
    args = _signature_args(table, datasets.load_uea, skip=("name",))
    table.finish()
    if len(problems) > before:
        return None
    try:
        train, test = datasets.load_uea(name, **args)
    except ImportError:
        problems.add(
            "data.name",
            f"{name} is read with aeon, which is not installed",
            "pip install 'ncps-mlx[data]'",
        )
        return None
    except (ValueError, OSError) as error:
        problems.add("data.name", str(error))
        return None
    validation = validation or "test"
    sizes = (len(train), len(test) if validation == "test" else 0)
    info = _info(train.x.shape, train.y, len(train.classes), sizes, train.timespans, train.mask)
    return DataConfig("uea", name, None, args, validation, 0.0, info)


def _split_sizes(count: int, fraction: float, problems: _Problems) -> tuple[int, int] | None:
    """``(train, validation)`` sequence counts of a random split, or None if one is empty."""
    val = round(count * fraction)
    if fraction > 0 and val == 0:
        problems.add(
            "data.validation_fraction",
            f"{fraction} of {count} sequences leaves no validation sequence",
            "raise it, or set 0 to train without validation",
        )
        return None
    if count - val < 1:
        problems.add(
            "data.validation_fraction",
            f"{fraction} of {count} sequences leaves no training sequence",
            "lower it",
        )
        return None
    return count - val, val


def _info(
    x_shape: tuple,
    y: Any,
    classes: int | None,
    sizes: tuple[int, int],
    timespans: Any,
    mask: Any,
) -> DataInfo:
    """Describe data from x's shape and y (an array or a ``(shape, dtype)`` pair)."""
    y_shape, y_dtype = (y.shape, y.dtype) if hasattr(y, "shape") else y
    labels = np.issubdtype(y_dtype, np.integer)
    per_step = len(y_shape) == 3 or (len(y_shape) == 2 and labels)
    if labels and classes is None:
        classes = int(np.max(y)) + 1
    return DataInfo(
        input_size=int(x_shape[2]),
        output_size=int(classes) if labels else int(y_shape[-1]),
        classification=bool(labels),
        per_step=per_step,
        seq_len=int(x_shape[1]),
        train_size=sizes[0],
        val_size=sizes[1],
        timespans=timespans is not None,
        mask=mask is not None,
    )


def _npz_data(
    path: Path,
    base_dir: Path,
    options: dict,
    validation: str | None,
    fraction: float | None,
    problems: _Problems,
) -> DataConfig | None:
    if options:
        problems.add(
            "data.options",
            "only for generated tasks and UEA sets",
            "remove it: an .npz file is used as it is",
        )
    if validation is not None:
        problems.add(
            "data.validation",
            "only for UEA sets",
            "use validation_fraction, or val_x and val_y arrays in the file",
        )
    path = path.expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        problems.add(
            "data.path",
            f"no file at {str(path)!r}",
            "give an existing .npz file (relative to the config file's folder)",
        )
        return None
    headers = _npz_headers(path, problems)
    if headers is None or not _check_npz_arrays(headers, problems):
        return None
    has_val = "val_x" in headers
    if has_val and fraction is not None:
        problems.add(
            "data.validation_fraction",
            "the file has val_x and val_y arrays",
            "remove validation_fraction, or the val_* arrays",
        )
        return None
    classes = _npz_classes(path, headers, problems)
    if classes is False:
        return None
    count = headers["x"][0][0]
    if has_val:
        sizes, mode, fraction = (count, headers["val_x"][0][0]), "file", 0.0
    else:
        fraction = DEFAULT_VALIDATION_FRACTION if fraction is None else fraction
        sizes = _split_sizes(count, fraction, problems)
        if sizes is None:
            return None
        mode = "fraction" if sizes[1] else "none"
    info = _info(
        headers["x"][0], headers["y"], classes, sizes, headers.get("timespans"), headers.get("mask")
    )
    return DataConfig("npz", None, path, {}, mode, fraction, info)


def _npz_headers(path: Path, problems: _Problems) -> dict[str, tuple] | None:
    """``name -> (shape, dtype)`` of every array in an .npz file, read from the headers."""
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    if version not in readers:
                        raise ValueError(f"npy format {version} of {member} is not supported")
                    shape, _, dtype = readers[version](handle)
                headers[member.removesuffix(".npy")] = (shape, dtype)
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        problems.add(
            "data.path",
            f"{str(path)!r} is not a readable .npz file ({error})",
            "write it with numpy.savez",
        )
        return None
    return headers


def _check_npz_arrays(headers: dict[str, tuple], problems: _Problems) -> bool:
    """Check the arrays' names, dtypes and shapes; return whether they are usable."""
    before = len(problems)
    allowed = NPZ_ARRAYS + tuple(f"val_{name}" for name in NPZ_ARRAYS if name != "classes")
    for name in headers:
        if name not in allowed:
            problems.add(
                "data.path",
                f"the file has an unknown array {name!r}",
                _choose(name, allowed, "remove it; allowed arrays:"),
            )
    for name, (_, dtype) in headers.items():
        if dtype.hasobject:  # np.load refuses pickled objects, as it should
            problems.add(
                "data.path",
                f"the array {name!r} holds Python objects",
                "save numbers, booleans or strings",
            )
    for prefix in ("", "val_"):
        present = [key for key in ("x", "y") if prefix + key in headers]
        if prefix and not present:
            continue
        if len(present) < 2:
            problems.add(
                "data.path",
                f"the file lacks {prefix}x or {prefix}y",
                f"save both {prefix}x and {prefix}y",
            )
            continue
        _check_split_arrays(headers, prefix, problems)
    if "x" in headers and "val_x" in headers:
        features = headers["x"][0][-1:], headers["val_x"][0][-1:]
        if features[0] != features[1]:
            problems.add(
                "data.path",
                f"x has {features[0]} features but val_x {features[1]}",
                "give both the same features",
            )
    return len(problems) == before


def _check_split_arrays(headers: dict[str, tuple], prefix: str, problems: _Problems) -> None:
    (x_shape, x_dtype), (y_shape, y_dtype) = headers[prefix + "x"], headers[prefix + "y"]
    name = f"{prefix}x"
    if len(x_shape) != 3 or 0 in x_shape or x_dtype.kind != "f":
        problems.add(
            "data.path",
            f"{name} is {x_dtype} {x_shape}",
            f"{name} must be floats of shape (samples, time, features)",
        )
        return
    n, t = x_shape[:2]
    y_shape = tuple(y_shape)
    if y_dtype.kind in "iu":
        fits = y_shape in ((n,), (n, t))
    else:
        fits = y_dtype.kind == "f" and (
            (len(y_shape) == 2 and y_shape[0] == n) or (len(y_shape) == 3 and y_shape[:2] == (n, t))
        )
    if not fits:
        problems.add(
            "data.path",
            f"{prefix}y is {y_dtype} {y_shape}, which does not fit {name} {x_shape}",
            f"{prefix}y must be ({n},) or ({n}, {t}) int labels, or ({n}, O) or ({n}, {t}, O) "
            "floats",
        )
    for key, kinds in (("timespans", "f"), ("mask", "b")):
        if prefix + key in headers:
            shape, dtype = headers[prefix + key]
            if tuple(shape) != (n, t) or dtype.kind not in kinds:
                kind = "floats" if kinds == "f" else "booleans"
                problems.add(
                    "data.path",
                    f"{prefix}{key} is {dtype} {shape}",
                    f"it must be {kind} of shape ({n}, {t})",
                )


def _npz_classes(path: Path, headers: dict[str, tuple], problems: _Problems) -> int | None:
    """The class count of integer labels (None for float targets, False on a problem)."""
    if headers["y"][1].kind not in "iu":
        return None
    with np.load(path) as archive:  # only the label arrays, which are small
        labels = [archive[key] for key in ("y", "val_y") if key in headers]
        named = len(archive["classes"]) if "classes" in headers else None
    low = min(int(y.min()) for y in labels)
    high = max(int(y.max()) for y in labels)
    if low < 0 or (named is not None and high >= named):
        limit = f"below {named} (the length of classes)" if named is not None else "that are >= 0"
        problems.add(
            "data.path", f"the class labels range over [{low}, {high}]", f"use labels {limit}"
        )
        return False
    return named if named is not None else high + 1


# -- [model] --------------------------------------------------------------------------


def _validate_model(table: _Table, info: DataInfo | None) -> tuple[ModelConfig | None, Any]:
    problems = table.problems
    before = len(problems)
    kind = table.get("type", "str", required=True, choices=MODELS)
    units = table.get("units", "int", min=1)
    wiring_raw = table.get("wiring", "table")
    kwargs = _model_kwargs(table, MODELS.get(kind), info)
    table.finish()
    if table.present("units") and table.present("wiring"):
        problems.add("model.wiring", "both units and wiring are set", "keep one of them")
    elif not table.present("units") and not table.present("wiring"):
        problems.add("model.units", "missing", "set units = <int> or add a [model.wiring] table")
    wiring = None
    if wiring_raw is not None:
        wiring = _wiring_args(_Table("model.wiring", wiring_raw, problems))
    if len(problems) > before or info is None:
        return None, None
    _fit_to_data(kind, kwargs, wiring, units, info, problems)
    if len(problems) > before:
        return None, None
    config = ModelConfig(kind, units, wiring, kwargs, 0)
    model = _try_build(config, info, problems)
    if model is None:
        return None, None
    parameters = sum(value.size for _, value in tree_flatten(model.parameters()))
    return dataclasses.replace(config, parameters=int(parameters)), model


def _model_kwargs(table: _Table, cls: type[RNN] | None, info: DataInfo | None) -> dict[str, Any]:
    """The class's other constructor arguments; the data decides two of them."""
    if cls is None:
        # Without a valid type its arguments are unknown: accept any key, rather than
        # report each one as unknown on top of the bad type.
        table.known.extend(table.raw)
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
    return _signature_args(table, cls, skip=skip, choices=_MODEL_CHOICES)


def _wiring_args(table: _Table) -> dict[str, Any] | None:
    kind = table.get("type", "str", required=True, choices=WIRINGS)
    if kind is None:
        table.known.extend(table.raw)
        return None
    output_key = WIRING_OUTPUT_KEY[kind]
    args = _signature_args(table, WIRINGS[kind], skip=("self",), optional=(output_key,))
    table.finish()
    return {"type": kind, **args}


def _fit_to_data(
    kind: str,
    kwargs: dict[str, Any],
    wiring: dict[str, Any] | None,
    units: int | None,
    info: DataInfo,
    problems: _Problems,
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


def _check_every_neuron_output(wiring: dict[str, Any], problems: _Problems) -> bool:
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


def _count(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def _outputs(count: int) -> str:
    return _count(count, "output")


def _output_needs(info: DataInfo) -> str:
    if info.classification:
        return f"{_outputs(info.output_size)} (one per class)"
    return f"{_outputs(info.output_size)} (the targets' last axis)"


def _try_build(config: ModelConfig, info: DataInfo, problems: _Problems) -> RNN | None:
    """Build the model as the run will, turning constructor errors into problems."""
    try:
        model = build_model(config, info)
    except ValueError as error:
        message = str(error)
        wiring = config.wiring or {}
        if any(re.search(rf"\b{key}\b", message) for key in wiring):
            where = _blame("model.wiring", message, wiring)
            problems.add(where, message, _wiring_hint(config, info, where))
        else:
            problems.add(_blame("model", message, config.kwargs), message)
        return None
    if model.output_size != info.output_size:
        problems.add(
            "model",
            f"the model has {_outputs(model.output_size)} but the data needs {_output_needs(info)}",
            _output_fix(config, info),
        )
        return None
    return model if _computes_declared_width(model, problems) else None


def _computes_declared_width(model: RNN, problems: _Problems) -> bool:
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


def build_model(config: ModelConfig, info: DataInfo) -> RNN:
    """A fresh, untrained model as ``config`` describes, for data like ``info``."""
    units: int | Wiring = config.units
    if config.wiring is not None:
        args = dict(config.wiring)
        units = WIRINGS[args.pop("type")](**args)
    return MODELS[config.type](info.input_size, units, batch_first=True, **config.kwargs)


# -- [training] -----------------------------------------------------------------------


def _validate_training(table: _Table, info: DataInfo | None) -> TrainingConfig:
    problems = table.problems
    labels = info is not None and info.classification
    epochs = table.get("epochs", "int", 10, min=1)
    batch_size = table.get("batch_size", "int", 32, min=1)
    loss = table.get("loss", "str", "cross_entropy" if labels else "mse", choices=sorted(LOSSES))
    metrics = table.get("metrics", "list[str]", ["accuracy"] if labels else [])
    optimizer = table.get("optimizer", "str", "adam", choices=OPTIMIZERS)
    learning_rate = table.get("learning_rate", "number", 1e-3, gt=0)
    weight_decay = table.get("weight_decay", "number", min=0)
    momentum = table.get("momentum", "number", min=0, lt=1)
    schedule = table.get("schedule", ("str", "table"), "none")
    clip_norm = table.get("clip_norm", "number", gt=0)
    shuffle = table.get("shuffle", "bool", True)
    early = table.get("early_stopping", "table")
    memory_budget_mb = table.get("memory_budget_mb", "number", gt=0)
    table.finish()
    metrics = _check_metrics(metrics, problems)
    _check_optimizer_keys(table, optimizer, problems)
    if info is not None:
        _check_targets(loss, metrics, info, problems)
    train_size = info.train_size if info is not None else batch_size
    steps_per_epoch = math.ceil(train_size / batch_size)
    total_steps = epochs * steps_per_epoch
    schedule = _validate_schedule(schedule, learning_rate, total_steps, problems)
    has_val = info is not None and info.val_size > 0
    early = _validate_early_stopping(early, metrics, has_val, problems)
    return TrainingConfig(
        epochs,
        batch_size,
        loss,
        tuple(metrics),
        optimizer,
        learning_rate,
        weight_decay,
        momentum,
        schedule,
        clip_norm,
        shuffle,
        early,
        memory_budget_mb,
        steps_per_epoch,
    )


def _check_metrics(metrics: list[str], problems: _Problems) -> list[str]:
    for metric in metrics:
        if metric not in METRICS:
            problems.add(
                "training.metrics", f"unknown metric {metric!r}", _choose(metric, sorted(METRICS))
            )
    return [metric for metric in dict.fromkeys(metrics) if metric in METRICS]


def _check_optimizer_keys(table: _Table, optimizer: str, problems: _Problems) -> None:
    takes = {"weight_decay": ("adamw", "sgd"), "momentum": ("sgd",)}
    for key, optimizers in takes.items():
        if table.present(key) and optimizer not in optimizers:
            names = " or ".join(repr(name) for name in optimizers)
            problems.add(
                f"training.{key}",
                f"the {optimizer!r} optimizer does not take it",
                f"remove it, or use optimizer {names}",
            )


def _check_targets(loss: str, metrics: list[str], info: DataInfo, problems: _Problems) -> None:
    """Losses and metrics must suit the targets: labels or float values."""
    targets = "integer class labels" if info.classification else "float targets"
    if (loss in CLASSIFICATION_LOSSES) != info.classification:
        fitting = sorted(
            name for name in LOSSES if (name in CLASSIFICATION_LOSSES) == info.classification
        )
        problems.add(
            "training.loss",
            f"{loss!r} does not suit the data's {targets}",
            f"use one of {', '.join(fitting)}",
        )
    for metric in metrics:
        if (metric == "accuracy") != info.classification:
            fitting = ["accuracy"] if info.classification else ["mae", "mse"]
            problems.add(
                "training.metrics",
                f"{metric!r} does not suit the data's {targets}",
                f"use {' or '.join(fitting)}",
            )


def _validate_schedule(
    value: str | dict, learning_rate: float, total_steps: int, problems: _Problems
) -> ScheduleConfig:
    if isinstance(value, str):
        if value not in SCHEDULES:
            problems.add("training.schedule", f"got {value!r}", _choose(value, SCHEDULES))
            return ScheduleConfig()
        value = {"type": value}
    table = _Table("training.schedule", value, problems)
    kind = table.get("type", "str", "none", required=True, choices=SCHEDULES)
    read = {
        "decay_steps": table.get("decay_steps", "int", min=1),
        "end_learning_rate": table.get("end_learning_rate", "number", min=0),
        "decay_rate": table.get("decay_rate", "number", gt=0, lt=1),
        "step_size": table.get("step_size", "int", min=1),
    }
    table.finish()
    takes = _SCHEDULE_KEYS[kind]
    for key in read:
        if table.present(key) and key not in takes:
            users = [name for name, keys in _SCHEDULE_KEYS.items() if key in keys]
            problems.add(
                f"training.schedule.{key}",
                f"a {kind!r} schedule does not take it",
                f"remove it, or use type {' or '.join(map(repr, users))}",
            )
    return _resolve_schedule(kind, read, learning_rate, total_steps, problems)


def _resolve_schedule(
    kind: str, read: dict, learning_rate: float, total_steps: int, problems: _Problems
) -> ScheduleConfig:
    if kind == "step":
        rate = read["decay_rate"] if read["decay_rate"] is not None else 0.5
        size = read["step_size"] or max(1, total_steps // 3)
        return ScheduleConfig(kind, decay_rate=rate, step_size=size)
    if kind == "none":
        return ScheduleConfig()
    steps = read["decay_steps"] or total_steps
    default_end = 0.0 if kind == "cosine" else learning_rate / 100
    end = read["end_learning_rate"] if read["end_learning_rate"] is not None else default_end
    if end >= learning_rate:
        problems.add(
            "training.schedule.end_learning_rate",
            f"{end} is not below the learning_rate {learning_rate}",
            "lower it, or the learning_rate",
        )
    if kind == "exponential" and end <= 0:
        problems.add(
            "training.schedule.end_learning_rate",
            "an exponential decay never reaches 0",
            "use a number > 0",
        )
    return ScheduleConfig(kind, decay_steps=steps, end_learning_rate=end)


def _validate_early_stopping(
    raw: dict | None, metrics: list[str], has_val: bool, problems: _Problems
) -> EarlyStoppingConfig | None:
    if raw is None:
        return None
    logged = ["loss"] + (["val_loss"] + [f"val_{m}" for m in metrics] if has_val else [])
    table = _Table("training.early_stopping", raw, problems)
    monitor = table.get("monitor", "str", "val_loss" if has_val else "loss")
    patience = table.get("patience", "int", 5, min=1)
    min_delta = table.get("min_delta", "number", 0.0, min=0)
    mode = table.get("mode", "str", "auto", choices=("auto", "min", "max"))
    table.finish()
    if monitor not in logged:
        why = "" if has_val else " (val_ figures need validation data)"
        problems.add(
            "training.early_stopping.monitor",
            f"{monitor!r} is not logged{why}",
            _choose(monitor, logged),
        )
    return EarlyStoppingConfig(monitor, patience, float(min_delta), mode)


def _check_memory(model: RNN, training: TrainingConfig, info: DataInfo, problems: _Problems):
    """Ask fit's own memory check now, so a batch too large is reported with the rest."""
    from .training.memory import check_memory

    budget = _budget_bytes(training.memory_budget_mb)
    try:
        check_memory(model, training.batch_size, info.seq_len, budget=budget)
    except (NCPSError, ValueError) as error:
        # The message names the batch size that fits and the other remedies.
        where = "training.memory_budget_mb" if budget is not None else "training.batch_size"
        problems.add(where, str(error))


# -- [output] -------------------------------------------------------------------------


def _validate_output(table: _Table) -> OutputConfig:
    problems = table.problems
    out = table.get("dir", "str", "", required=True)
    resume = table.get("resume", "bool", False)
    progress = table.get("progress", "bool", True)
    monitor = table.get("monitor", "bool", False)
    export = table.get("export_coreml", "bool", False)
    table.finish()
    directory = Path(out).expanduser()
    if out and directory.exists() and not directory.is_dir():
        problems.add("output.dir", f"{out!r} is a file", "give a folder (it is created if missing)")
    elif out and not resume and any((directory / name).exists() for name in RUN_FILES):
        problems.add(
            "output.dir",
            f"{out!r} already holds a run",
            "set output.resume = true (or --resume) to continue it, or choose another folder",
        )
    needs = {
        "progress": (progress, "tqdm", "pip install tqdm"),
        "export_coreml": (export, "coremltools", "pip install 'ncps-mlx[export]'"),
    }
    for key, (wanted, module, install) in needs.items():
        if wanted and not _importable(module):
            problems.add(
                f"output.{key}",
                f"needs {module}, which is not installed",
                f"{install}, or set {key} = false",
            )
    return OutputConfig(directory, resume, progress, monitor, export)


# -- running --------------------------------------------------------------------------


def build_data(config: Config) -> tuple[datasets.SequenceData, datasets.SequenceData | None]:
    """The training and validation data of ``config`` (validation None when off)."""
    data = config.data
    if data.source == "uea":
        train, test = datasets.load_uea(data.name, **data.options)
        return train, (test if data.validation == "test" else None)
    if data.source == "generated":
        full = GENERATORS[data.name](**data.options)
    else:
        with np.load(data.path) as archive:
            arrays = {key: archive[key] for key in archive.files}
        if data.validation == "file":
            return _npz_split(arrays, ""), _npz_split(arrays, "val_")
        full = _npz_split(arrays, "")
    return _random_split(full, data.info.val_size, config.seed)


def _npz_split(arrays: dict[str, np.ndarray], prefix: str) -> datasets.SequenceData:
    classes = arrays.get("classes")
    return datasets.SequenceData(
        arrays[prefix + "x"],
        arrays[prefix + "y"],
        timespans=arrays.get(prefix + "timespans"),
        mask=arrays.get(prefix + "mask"),
        classes=tuple(classes.tolist()) if classes is not None else None,
    )


def _random_split(
    data: datasets.SequenceData, val_size: int, seed: int
) -> tuple[datasets.SequenceData, datasets.SequenceData | None]:
    if val_size == 0:
        return data, None
    order = np.random.default_rng(seed).permutation(len(data))
    # Sorted so each part keeps the data's own order.
    return data.subset(np.sort(order[val_size:])), data.subset(np.sort(order[:val_size]))


def build_optimizer(training: TrainingConfig) -> optim.Optimizer:
    """The optimizer of ``training``, its learning rate following the schedule."""
    rate = _learning_rate(training.learning_rate, training.schedule)
    if training.optimizer == "adamw":
        decay = training.weight_decay if training.weight_decay is not None else 0.01
        return optim.AdamW(learning_rate=rate, weight_decay=decay)
    if training.optimizer == "sgd":
        return optim.SGD(
            learning_rate=rate,
            momentum=training.momentum or 0.0,
            weight_decay=training.weight_decay or 0.0,
        )
    if training.optimizer == "rmsprop":
        return optim.RMSprop(learning_rate=rate)
    return optim.Adam(learning_rate=rate)


def _learning_rate(initial: float, schedule: ScheduleConfig) -> float | Callable:
    if schedule.type == "cosine":
        return optim.cosine_decay(initial, schedule.decay_steps, schedule.end_learning_rate)
    if schedule.type == "exponential":
        ratio = schedule.end_learning_rate / initial
        return optim.exponential_decay(initial, ratio ** (1 / schedule.decay_steps))
    if schedule.type == "step":
        return optim.step_decay(initial, schedule.decay_rate, schedule.step_size)
    return initial


def build_callbacks(training: TrainingConfig) -> list:
    """``EarlyStopping`` when configured."""
    from .training import EarlyStopping

    early = training.early_stopping
    if early is None:
        return []
    return [EarlyStopping(early.monitor, early.patience, early.min_delta, early.mode)]


def run_config(config: Config, *, log: Callable[[str], Any] = print):
    """Train as ``config`` says and save the results in ``config.output.dir``.

    Writes ``checkpoints/`` (during training), ``model.safetensors``, ``metrics.json``,
    and ``monitor.jsonl`` / ``model.mlpackage`` when asked for.

    Returns:
        The :class:`~ncps_mlx.training.History` of the run (all epochs when resumed).

    Raises:
        TrainingDivergedError: The loss became nan or inf (see ``fit``).
    """
    from .training import fit

    out = config.output.dir
    train, val = build_data(config)
    mx.random.seed(config.seed)  # the initial weights
    model = build_model(config.model, config.data.info)
    monitor = _make_monitor(config, model)
    log(config.summary())
    start = time.perf_counter()
    history = fit(
        model,
        train,
        val,
        loss=config.training.loss,
        optimizer=build_optimizer(config.training),
        epochs=config.training.epochs,
        batch_size=config.training.batch_size,
        metrics=list(config.training.metrics),
        callbacks=build_callbacks(config.training),
        monitor=monitor,
        checkpoint_dir=out / CHECKPOINTS,
        resume=config.output.resume,
        progress=config.output.progress,
        clip_norm=config.training.clip_norm,
        shuffle=config.training.shuffle,
        seed=config.seed,
        memory_budget=_budget_bytes(config.training.memory_budget_mb),
    )
    _write_results(config, model, history, time.perf_counter() - start, monitor, log)
    return history


def _budget_bytes(megabytes: float | None) -> int | None:
    return int(megabytes * 2**20) if megabytes is not None else None


def _make_monitor(config: Config, model: RNN) -> Any:
    if not config.output.monitor:
        return None
    from .monitor import Monitor

    return Monitor(model=model, seq_len=config.data.info.seq_len)


def _write_results(
    config: Config, model: RNN, history: Any, seconds: float, monitor: Any, log: Callable
) -> None:
    from . import io

    out = config.output.dir
    log(f"wrote {io.save(model, out / 'model.safetensors', metadata={'config': config.to_dict()})}")
    metrics = _metrics_record(config, history, seconds)
    path = out / "metrics.json"
    io.atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=2)))
    log(f"wrote {path}")
    if monitor is not None:
        log(f"wrote {monitor.save(out / 'monitor.jsonl')}")
    if config.output.export_coreml:
        from .export import to_coreml

        path = to_coreml(model, out / "model.mlpackage", timespans=config.data.info.timespans)
        log(f"wrote {path}")


def _metrics_record(config: Config, history: Any, seconds: float) -> dict[str, Any]:
    rows = history.rows
    final = {key: value for key, value in rows[-1].items() if key != "epoch"} if rows else {}
    record = {
        "epochs_run": len(rows),
        "stop_reason": history.stop_reason,
        "seconds": round(seconds, 3),
        "train_seconds": round(sum(row.get("seconds", 0.0) for row in rows), 3),
        "final": final,
        "parameters": config.model.parameters,
    }
    if rows and "val_loss" in rows[-1]:
        best = min(rows, key=lambda row: row["val_loss"])
        record["best"] = {"epoch": best["epoch"], "val_loss": best["val_loss"]}
    record["config"] = config.to_dict()
    return record


# -- summaries ------------------------------------------------------------------------


def _describe_data(data: DataConfig) -> str:
    info = data.info
    origin = {"generated": "generated", "uea": "UEA set", "npz": "file"}[data.source]
    label = data.name if data.path is None else str(data.path)
    options = ", ".join(f"{k}={v}" for k, v in data.options.items())
    head = f"{label} ({origin}{'; ' + options if options else ''})"
    validation = {
        "test": "the test split",
        "file": "the file's val_* arrays",
        "fraction": f"a {data.validation_fraction:g} share held out",
        "none": "no validation",
    }[data.validation]
    task = (
        _count(info.output_size, "class", "classes")
        if info.classification
        else _count(info.output_size, "target")
    )
    extras = [name for name, on in (("timespans", info.timespans), ("mask", info.mask)) if on]
    return (
        f"{head}: {info.train_size} train / {info.val_size} validation sequences "
        f"({validation}) of {_count(info.seq_len, 'step')} x "
        f"{_count(info.input_size, 'feature')} -> {task} "
        f"{'per step' if info.per_step else 'per sequence'}"
        + (f", with {' and '.join(extras)}" if extras else "")
    )


def _describe_model(model: ModelConfig) -> str:
    if model.wiring is not None:
        args = dict(model.wiring)
        units = f"{args.pop('type')}({', '.join(f'{k}={v}' for k, v in args.items())})"
    else:
        units = str(model.units)
    kwargs = "".join(f", {k}={v}" for k, v in model.kwargs.items())
    return f"{model.type}(units={units}{kwargs}): {_count(model.parameters, 'parameter')}"


def _describe_training(training: TrainingConfig) -> str:
    steps = training.epochs * training.steps_per_epoch
    schedule = training.schedule
    rate = f"{training.optimizer} lr={training.learning_rate:g}"
    if schedule.type != "none":
        rate += f" ({schedule.type} schedule)"
    batches = _count(training.steps_per_epoch, "batch", "batches")
    parts = [
        f"{_count(training.epochs, 'epoch')} x {batches} of {training.batch_size} "
        f"({_count(steps, 'step')})",
        rate,
        f"loss {training.loss}",
    ]
    if training.metrics:
        parts.append(f"metrics {', '.join(training.metrics)}")
    if training.clip_norm is not None:
        parts.append(f"clip_norm {training.clip_norm:g}")
    if training.early_stopping is not None:
        early = training.early_stopping
        parts.append(f"early stopping on {early.monitor} (patience {early.patience})")
    return ", ".join(parts)


def _describe_output(output: OutputConfig) -> str:
    files = ["checkpoints/", "model.safetensors", "metrics.json"]
    files += ["monitor.jsonl"] if output.monitor else []
    files += ["model.mlpackage"] if output.export_coreml else []
    resume = ", resuming" if output.resume else ""
    return f"{output.dir}{resume}: {', '.join(files)}"
