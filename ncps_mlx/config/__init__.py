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

import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError as ConfigError
from ..errors import see
from .build import GENERATORS as GENERATORS
from .build import WIRINGS as WIRINGS
from .build import build_callbacks as build_callbacks
from .build import build_data as build_data
from .build import build_model as build_model
from .build import build_optimizer as build_optimizer
from .model import WIRING_OUTPUT_KEY as WIRING_OUTPUT_KEY
from .npz import NPZ_ARRAYS as NPZ_ARRAYS
from .output import CHECKPOINTS as CHECKPOINTS
from .output import RUN_FILES as RUN_FILES
from .resolved import DEFAULT_VALIDATION_FRACTION as DEFAULT_VALIDATION_FRACTION
from .resolved import OPTIMIZERS as OPTIMIZERS
from .resolved import SCHEDULES as SCHEDULES
from .resolved import Config as Config
from .resolved import DataConfig as DataConfig
from .resolved import DataInfo as DataInfo
from .resolved import EarlyStoppingConfig as EarlyStoppingConfig
from .resolved import ModelConfig as ModelConfig
from .resolved import OutputConfig as OutputConfig
from .resolved import ScheduleConfig as ScheduleConfig
from .resolved import TrainingConfig as TrainingConfig
from .run import run_config as run_config
from .validate import validate_config as validate_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as the tomli package
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None


def load_config(path: str | Path) -> dict[str, Any]:
    """Parse a TOML run config into plain Python values (nothing is checked yet).

    Raises:
        ConfigError: The file is missing or is not valid TOML (with the line).
        ImportError: On Python 3.10 without the ``tomli`` package.
    """
    if tomllib is None:
        raise ImportError(
            "reading TOML configs on Python 3.10 needs the tomli package: pip install tomli\n"
            + see("missing-extra")
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
