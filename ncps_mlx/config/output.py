"""``[output]``: where a run writes, and what it needs installed."""

from __future__ import annotations

from pathlib import Path

from ._fields import Table, importable, read_fields
from .resolved import OutputConfig

CHECKPOINTS = "checkpoints"
"""The folder, inside the output folder, where a run keeps its checkpoints."""
RUN_FILES = (CHECKPOINTS, "model.safetensors", "metrics.json")
"""Files whose presence means the output folder already holds a run."""


def holds_run(directory: Path) -> bool:
    """Whether ``directory`` holds the files of a run (of ``train`` or ``demo``)."""
    return any((directory / name).exists() for name in RUN_FILES)


def validate_output(table: Table) -> OutputConfig:
    """Check the `[output]` table: the folder, resume or overwrite, and that what the
    section asks for (a progress bar, a Core ML export) is installed.

    Args:
        table: The `[output]` table; its problems are added to `table.problems`.

    Returns:
        The section with `dir` as a path (the section as read even when problems were
        found: they are reported with the rest).
    """
    problems = table.problems
    keys = read_fields(table, OutputConfig)
    out, resume, overwrite = keys["dir"] or "", keys["resume"], keys["overwrite"]
    directory = Path(out).expanduser()
    if out and directory.exists() and not directory.is_dir():
        problems.add("output.dir", f"{out!r} is a file", "give a folder (it is created if missing)")
    elif resume and overwrite:
        problems.add("output.overwrite", "set with output.resume", "keep one of them")
    elif out and not (resume or overwrite) and holds_run(directory):
        problems.add(
            "output.dir",
            f"{out!r} already holds a run",
            "set output.resume = true (or --resume) to continue it, output.overwrite = true "
            "(or --overwrite) to replace it, or choose another folder",
        )
    needs = {
        "progress": (keys["progress"], "tqdm", "pip install tqdm"),
        "export_coreml": (keys["export_coreml"], "coremltools", "pip install 'ncps-mlx[export]'"),
    }
    for key, (wanted, module, install) in needs.items():
        if wanted and not importable(module):
            problems.add(
                f"output.{key}",
                f"needs {module}, which is not installed",
                f"{install}, or set {key} = false",
            )
    return OutputConfig(**{**keys, "dir": directory})
