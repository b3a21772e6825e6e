"""Config-driven training runs: one TOML file says what to train, on what, and where.

[`read_config`][ncps_mlx.config.read_config] (or [`load_config`][ncps_mlx.config.load_config] then
`validate_config`) checks the whole file before anything is computed or written, and reports every
problem at once in one [`ConfigError`][ncps_mlx.errors.ConfigError], each as ``section.key: what is
wrong; what to do``; `run_config` then trains with [`fit`][ncps_mlx.training.fit.fit] and saves the
results. From the shell:

```bash
ncps-mlx validate run.toml        # what would run, or the list of problems (exit 2)
ncps-mlx train run.toml [--resume] [--out DIR]
```

Every section and key, with a complete example file, is in the Run configs guide
(``docs/run-configs.md``). Its key tables are made from the schema: the dataclasses
(`Config`, `DataConfig`, `ModelConfig`, `TrainingConfig`,
`ScheduleConfig`, `EarlyStoppingConfig`, `OutputConfig`) whose
fields declare each key's type, default, choices and bounds, and which validation
returns with every default resolved.
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
    path: str | Path,
    *,
    output_dir: str | Path | None = None,
    resume: bool | None = None,
    overwrite: bool | None = None,
) -> Config:
    """Load and validate a config file; ``output_dir``, ``resume`` and ``overwrite``
    override ``[output]``.

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
        if overwrite is not None:
            output["overwrite"] = overwrite
    return validate_config(raw, base_dir=Path(path).parent, source=str(path))
