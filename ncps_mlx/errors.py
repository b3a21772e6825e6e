"""Exceptions raised by ncps_mlx.

Bad arguments raise `ValueError` (the convention of numpy and MLX). Everything
else the package detects raises a subclass of [`NCPSError`][ncps_mlx.errors.NCPSError], so callers
can catch the package's own failures in one place.

Messages of the errors the troubleshooting guide covers end with a line from
[`see`][ncps_mlx.errors.see] that points to the guide's section on them.
"""

import re
from collections.abc import Iterable

DOCS_URL = "https://ncps-mlx.github.io/ncps_mlx/"
"""Where the documentation site is published (``site_url`` in mkdocs.yml)."""

TROUBLESHOOTING = DOCS_URL + "troubleshooting/"
"""The published troubleshooting guide (``docs/troubleshooting.md`` in the repository);
the pointers of error messages lead into it, one section each."""


def see(anchor: str) -> str:
    """The pointer to a section of the troubleshooting guide, ending an error message.

    Appended on a line of its own: ``f"{message}\\n{see('input-shape')}"`` gives
    ``See https://ncps-mlx.github.io/ncps_mlx/troubleshooting/#input-shape.`` as the
    message's last line: the section's link on the published site.
    """
    return f"See {TROUBLESHOOTING}#{anchor}."


def _without_pointers(message: str) -> str:
    """``message`` less its lines from [`see`][ncps_mlx.errors.see], to quote it inside another
    message."""
    return re.sub(rf"\nSee {re.escape(TROUBLESHOOTING)}#[\w-]+\.", "", message)


class NCPSError(Exception):
    """Base class of the errors ncps_mlx raises for its own conditions."""


class WiringError(NCPSError, ValueError):
    """A wiring is used in a way its construction does not allow."""


class CheckpointError(NCPSError):
    """A checkpoint cannot be read, or does not belong to the model it is loaded into."""


class WriteError(NCPSError, OSError):
    """A file could not be written: disk full, permission denied, read-only file system.

    ``errno`` is the operating system's; the message names the path and what to do.
    """

    def __str__(self) -> str:  # OSError would prefix "[Errno N]"
        return self.strerror or super().__str__()


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint was loaded without a digest to verify its contents against."""


class StateDictError(NCPSError, KeyError):
    """An ncps (PyTorch) state dict does not match the model it is loaded into."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class TrainingDivergedError(NCPSError):
    """The training loss became nan or inf; the run stopped at the last good state."""


class MemoryBudgetError(NCPSError):
    """A training step (or inference call) would need more memory than the budget allows."""


class ConfigError(NCPSError, ValueError):
    """A run config with problems; ``problems`` lists each as ``section.key: ...``."""

    def __init__(self, problems: Iterable[str], source: str | None = None):
        # A problem quoting another error keeps its text, not its pointer: the config's own
        # pointer ends the message.
        self.problems = [_without_pointers(problem) for problem in problems]
        self.source = source
        count = len(self.problems)
        where = f"{source}: " if source else ""
        lines = "".join(f"\n  - {problem}" for problem in self.problems)
        super().__init__(
            f"{where}{count} problem{'s' if count != 1 else ''} in the config:{lines}\n"
            + see("config-error")
        )


class NumericsError(NCPSError, FloatingPointError):
    """A computation on finite inputs gave nan or inf (a solver's step beyond its
    stability bound, or an overflow of a low-precision dtype)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``fit`` at a step boundary, after saving a checkpoint to resume from
    when it had a ``checkpoint_dir``; the message says where it stopped and how to go on.

    A KeyboardInterrupt, and so not an [`NCPSError`][ncps_mlx.errors.NCPSError]: an interruption is
    the user's choice, and code that catches ``Exception`` must not swallow it.
    """

    def __init__(self, message: str, checkpoint: str | None = None):
        super().__init__(message)
        #: The checkpoint that resumes the run, or None if nothing was saved.
        self.checkpoint = checkpoint
