"""Checking a whole config: every section, then whether a training step fits."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NCPSError
from ..rnn import RNN
from ._fields import Problems, Table, read_fields
from .build import budget_bytes
from .data import validate_data
from .model import validate_model
from .output import validate_output
from .resolved import Config, DataInfo, TrainingConfig
from .training import check_l2_params, validate_training


def validate_config(
    raw: Mapping[str, Any], *, base_dir: str | Path | None = None, source: str | None = None
) -> Config:
    """Check a parsed config completely and resolve its defaults.

    Nothing is written and nothing is trained. The data is inspected only as far as
    cheap: a generated task is drawn once at one sequence, a shipped UEA set is loaded
    (they are small), an ``.npz`` file's array headers and integer labels are read. The
    model is built, and its training step run on a copy at a few batch sizes to measure
    the memory it needs ([`estimate_memory`][ncps_mlx.training.estimate_memory]).

    Args:
        raw: What [`load_config`][ncps_mlx.config.load_config] returned.
        base_dir: The folder ``data.path`` is relative to; default the current one.
        source: Where ``raw`` came from, for the error message.

    Raises:
        ConfigError: With every problem found, each as ``section.key: ...``.
    """
    problems = Problems()
    top = Table("", raw, problems)
    # A missing or mistyped section is None, one problem; its keys are then not checked.
    sections = read_fields(top, Config)
    seed = sections.pop("seed")
    if not top.present("training"):
        sections["training"] = {}
    base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
    data = model = built = training = output = None
    if sections["data"] is not None:
        data = validate_data(Table("data", sections["data"], problems), seed, base_dir)
    info = data.info if data is not None else None
    if sections["model"] is not None:
        model, built = validate_model(Table("model", sections["model"], problems), info)
    if sections["training"] is not None:
        training = validate_training(Table("training", sections["training"], problems), info)
    if sections["output"] is not None:
        output = validate_output(Table("output", sections["output"], problems))
    if built is not None and training is not None:
        check_l2_params(built, training, problems)
        _check_memory(built, training, info, problems)
    if problems:
        raise ConfigError(problems, source)
    return Config(
        seed=seed, data=data, model=model, training=training, output=output, source=source
    )


def _check_memory(model: RNN, training: TrainingConfig, info: DataInfo, problems: Problems):
    """Ask fit's own memory check now, so a batch too large is reported with the rest."""
    from ..training.memory import check_memory
    from .build import build_optimizer

    budget = budget_bytes(training.memory_budget_mb)
    try:
        optimizer = build_optimizer(training)
    except (TypeError, ValueError):  # its problem is reported: Adam's state stands in
        optimizer = None
    try:
        check_memory(
            model,
            training.batch_size,
            info.seq_len,
            budget=budget,
            optimizer=optimizer,
            timespans=info.timespans,
            mask=info.mask,
        )
    except (NCPSError, ValueError) as error:
        # The message names the batch size that fits and the other remedies.
        where = "training.memory_budget_mb" if budget is not None else "training.batch_size"
        problems.add(where, str(error))
