"""Exceptions raised by ncps_mlx.

Bad arguments raise :class:`ValueError` (the convention of numpy and MLX). Everything
else the package detects raises a subclass of :class:`NCPSError`, so callers can catch
the package's own failures in one place.
"""


class NCPSError(Exception):
    """Base class of the errors ncps_mlx raises for its own conditions."""


class WiringError(NCPSError, ValueError):
    """A wiring is used in a way its construction does not allow."""


class CheckpointError(NCPSError):
    """A checkpoint cannot be read, or does not belong to the model it is loaded into."""


class StateDictError(NCPSError, KeyError):
    """An ncps (PyTorch) state dict does not match the model it is loaded into."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
