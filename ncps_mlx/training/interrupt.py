"""Ctrl-C while ``fit`` runs: stop at a step boundary, and say how to go on."""

import contextlib
import signal
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

#: How to continue an interrupted run, set by a program around fit that reports
#: interruptions itself (the command line names its own command); fit then prints nothing.
_RESUME_COMMAND: ContextVar[str | None] = ContextVar("resume_command", default=None)


@contextlib.contextmanager
def resume_command(command: str) -> Iterator[None]:
    """Within, an interrupted ``fit`` says to continue with ``command`` (instead of a
    ``fit(..., resume=True)`` call) and leaves printing its message to the caller."""
    token = _RESUME_COMMAND.set(command)
    try:
        yield
    finally:
        _RESUME_COMMAND.reset(token)


def reports_itself() -> bool:
    """Whether a caller of fit (the command line) prints the interruption itself."""
    return _RESUME_COMMAND.get() is not None


class CtrlC:
    """Ctrl-C (SIGINT) while fit's loop runs: the first press asks the loop to stop at the
    next step boundary and save; a second raises KeyboardInterrupt at once, as usual."""

    def __init__(self) -> None:
        self.pressed = False

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    @contextlib.contextmanager
    def catching(self, wanted: bool) -> Iterator[None]:
        """Handle SIGINT within, and put back the previous handler on any way out.

        Only the main thread may set handlers. An ignored SIGINT (a background job) stays
        ignored, and a handler not set from Python (None) could not be put back.
        """
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGINT) if main_thread else None
        if not wanted or previous in (None, signal.SIG_IGN):
            yield
            return
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def interrupted_message(where: str, checkpoint: str | None, directory: Path | None) -> str:
    """What a run stopped by Ctrl-C says: where it stopped, what was saved, how to go on.

    Args:
        where: Where the run stopped, e.g. `"in epoch 3 after batch 10 of 50"`.
        checkpoint: The checkpoint saved on the way out, or None when nothing was saved.
        directory: The checkpoint folder, for the `fit(..., resume=True)` call to suggest
            when no command to resume with is set.
    """
    if checkpoint is None:
        return (
            f"training interrupted {where}; nothing was saved (no checkpoint_dir): the "
            "model holds the weights of the last step"
        )
    resume = _RESUME_COMMAND.get() or f"fit(..., checkpoint_dir={str(directory)!r}, resume=True)"
    return f"training interrupted {where}; saved {checkpoint!r}: continue with {resume}"
