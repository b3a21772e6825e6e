"""Files written whole or not at all, and OS errors that say what happened.

`atomic_write` writes to a temporary file beside the target, flushes it to the
disk, renames it into place and flushes the folder, so a crash or a kill at any point
leaves either the previous file or the new one, never a mixture. Its temporary files
carry a mark (`temporaries`) by which a later run finds and removes those a kill
left behind.
"""

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import WriteError, see

#: Every temporary file of :func:`atomic_write` has this in its name, after the target's.
TEMPORARY_MARK = ".partial"

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "the file is larger than the process may write (the file-size limit)",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
}
_FIXES = {
    errno.ENOSPC: "free some space or choose a folder on another disk",
    errno.EDQUOT: "free some space or choose a folder on another disk",
    errno.EFBIG: "raise the limit (ulimit -f) or save less",
    errno.EACCES: "choose a folder you may write to",
    errno.EPERM: "choose a folder you may write to",
    errno.EROFS: "choose a folder on a writable file system",
}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[str], Any],
    suffix: str = "",
    *,
    size: int | None = None,
) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` once it is complete.

    Args:
        path: The file to write; its folder is created if missing.
        write: Writes the whole content to the path it is given.
        suffix: Ending of the temporary name (some writers choose a format by it).
        size: Bytes the content needs, when known beforehand: a disk without that much
            free space is refused before anything is written.

    Raises:
        WriteError: The operating system refused (disk full, permission denied, read-only
            file system, ...): the message names the path, the bytes needed and says
            that the previous file, if any, is intact.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_space(path, size)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f"{TEMPORARY_MARK}{suffix}", dir=path.parent
        )
    except OSError as error:
        raise write_error(path, error, size) from error
    try:
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only; files get the usual mode
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise write_error(path, error, size) from error
        raise
    return path


def _check_space(path: Path, size: int | None) -> None:
    if size is None:
        return
    free = shutil.disk_usage(path.parent).free
    if free < size:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable: it is an entry of the folder, flushed with the folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform that cannot open folders (Windows): nothing to flush
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF):  # no fsync on this folder type
            raise
    finally:
        os.close(fd)


def write_error(path: Path, error: OSError, size: int | None) -> WriteError:
    """The package's error for an OS failure while writing ``path``."""
    reason = _REASONS.get(error.errno, error.strerror or str(error))
    fix = _FIXES.get(error.errno, "check the folder and the disk")
    needed = f" ({_bytes(size)} needed{_free(path)})" if size is not None else ""
    kept = (
        f"The previous {path.name} is intact."
        if path.exists()
        else f"Nothing was written at {path.name}."
    )
    return WriteError(
        error.errno,
        f"could not write {str(path)!r}: {reason}{needed}. {kept} To go on: {fix}.\n"
        + see("write-failed"),
    )


def _free(path: Path) -> str:
    try:
        return f", {_bytes(shutil.disk_usage(path.parent).free)} free"
    except OSError:
        return ""


def _bytes(count: int) -> str:
    return f"{count:,} bytes" if count < 2**20 else f"{count / 2**20:,.1f} MiB"


def temporaries(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """The temporary files `atomic_write` left in ``folder`` for the targets ``names``
    (left by a process killed while writing)."""
    folder = Path(folder)
    found: list[Path] = []
    for name in names:
        found += sorted(folder.glob(f".{name}.*{TEMPORARY_MARK}*"))
    return found


def remove_temporaries(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Remove what `temporaries` finds; returns the removed paths."""
    removed = []
    for path in temporaries(folder, names):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed
