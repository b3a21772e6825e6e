"""The parser of the ``ncps-mlx`` command and the types of its arguments.

Each type's error reads ``expected ..., got 'what was typed'``; the parser says it as
``ncps-mlx <command>: --flag: expected ...`` and where the options are listed.
"""

import argparse
import math
from pathlib import Path
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse's parser, saying a mistake in the command's two lines: what is wrong (the
    flag as typed, without argparse's usage block) and where the options are listed."""

    def error(self, message: str) -> NoReturn:
        message = message.removeprefix("argument ")
        # 2: argparse's own exit code for a usage error, and the command's.
        self.exit(2, f"{self.prog}: {message}\ntry '{self.prog} --help'\n")


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def existing_file(text: str) -> str:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a file, got the folder {text!r}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file {text!r}")
    return text


def output_folder(text: str) -> str:
    """A folder to write into: it may be missing (it is created), but not a file."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"expected a folder, got the file {text!r}")
    return text


def package_path(text: str) -> str:
    path = Path(text)
    if path.suffix != ".mlpackage":
        suggestion = path.with_suffix(".mlpackage") if path.name else "model.mlpackage"
        raise argparse.ArgumentTypeError(
            f"expected a name ending in .mlpackage, got {text!r} (e.g. '{suggestion}')"
        )
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder '{path.parent}' does not exist")
    return text


def monitor_backends(text: str) -> str:
    """'auto' or monitor backend names, comma-separated (spaces allowed); passed on as
    typed, for the live view to pick its backends from."""
    if text == "auto":
        return text
    from .monitor.backends import BACKENDS

    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected 'auto' or backend names, got {text!r}")
    for name in names:
        if name not in BACKENDS:
            raise argparse.ArgumentTypeError(
                f"unknown backend {name!r}; use 'auto' or names from {', '.join(BACKENDS)}"
            )
    return text
