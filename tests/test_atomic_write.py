"""atomic_write when the operating system refuses after the temporary file exists: the
error says what happened, the temporary is gone and the previous file is intact."""

import errno
import os
import stat

import pytest

from ncps_mlx import WriteError, _files
from ncps_mlx.errors import see


def _previous(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"previous")
    return path


def _writer(content: bytes, fail_with: BaseException | None = None):
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(content)
        if fail_with is not None:
            raise fail_with

    return write


def test_a_refusal_while_writing_is_a_write_error_and_leaves_the_previous_file(tmp_path):
    path = _previous(tmp_path)
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(WriteError) as caught:
        _files.atomic_write(path, _writer(b"new, half written", full), size=17)
    error = caught.value
    assert error.errno == errno.ENOSPC and error.__cause__ is full
    message = str(error)
    assert message.startswith(f"could not write {str(path)!r}: the disk is full (17 bytes needed, ")
    assert (
        " free). The previous data.bin is intact. To go on: free some space or choose a " in message
    )
    assert message.endswith(see("write-failed"))
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]  # no temporary left


def test_any_other_exception_passes_through_and_leaves_no_temporary(tmp_path):
    path = _previous(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _files.atomic_write(path, _writer(b"new", KeyboardInterrupt()))
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_a_write_error_of_the_writer_is_not_wrapped_twice(tmp_path):
    path = _previous(tmp_path)
    inner = WriteError(errno.EROFS, "could not write the inner file")
    with pytest.raises(WriteError) as caught:
        _files.atomic_write(path, _writer(b"new", inner))
    assert caught.value is inner


def test_the_free_space_is_left_out_when_it_cannot_be_read(tmp_path, monkeypatch):
    path = tmp_path / "data.bin"

    def unreadable(_):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(_files.shutil, "disk_usage", unreadable)
    error = _files.write_error(path, OSError(errno.ENOSPC, "no space"), size=3 * 2**20)
    assert str(error).startswith(
        f"could not write {str(path)!r}: the disk is full (3.0 MiB needed). Nothing was "
        "written at data.bin. To go on: free some space"
    )


def _folder_fsync(monkeypatch, refusal: int):
    """os.fsync refusing with ``refusal`` on folders, as some file systems do."""
    real = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(refusal, os.strerror(refusal))
        real(fd)

    monkeypatch.setattr(_files.os, "fsync", fsync)


@pytest.mark.parametrize("refusal", [errno.EINVAL, errno.EBADF])
def test_a_folder_that_cannot_be_flushed_still_gets_the_file(tmp_path, monkeypatch, refusal):
    _folder_fsync(monkeypatch, refusal)
    path = _files.atomic_write(tmp_path / "data.bin", _writer(b"new"))
    assert path.read_bytes() == b"new"


def test_a_folder_flush_that_fails_otherwise_is_an_error(tmp_path, monkeypatch):
    _folder_fsync(monkeypatch, errno.EIO)
    with pytest.raises(WriteError) as caught:
        _files.atomic_write(tmp_path / "data.bin", _writer(b"new"))
    assert caught.value.errno == errno.EIO
    # The rename had happened: the new file is complete, and the message says so.
    assert "The previous data.bin is intact" in str(caught.value)
    assert (tmp_path / "data.bin").read_bytes() == b"new"


def test_a_folder_that_cannot_be_opened_is_not_flushed(tmp_path, monkeypatch):
    real_open = os.open
    opened = []

    def open_(path, flags, *args, **kwargs):
        if os.path.isdir(path):
            opened.append(path)
            raise PermissionError(errno.EACCES, "folders cannot be opened here")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(_files.os, "open", open_)
    path = _files.atomic_write(tmp_path / "data.bin", _writer(b"new"))
    assert path.read_bytes() == b"new" and opened == [tmp_path]
