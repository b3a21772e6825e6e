"""Durable writes and the errors of a failed one; the checkpoint's digest and load limits."""

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import ncps_mlx
from ncps_mlx import LTC, CfC, CheckpointError, LoadLimits, WriteError, _files
from ncps_mlx.errors import see
from ncps_mlx.wirings import AutoNCP

ROOT = Path(__file__).parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_file_size_limit_leaves_the_previous_checkpoint_and_says_why(tmp_path):
    path = ncps_mlx.save(CfC(2, 4, backbone_units=4), tmp_path / "m.safetensors")
    before = path.read_bytes()
    result = _run(
        f"""
        import resource
        import ncps_mlx
        from ncps_mlx import CfC
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # the bigger model needs more
        try:
            ncps_mlx.save(CfC(2, 64), {str(path)!r})
        except ncps_mlx.WriteError as error:
            print(error.errno, error, sep="\\n")
        """
    )
    assert result.returncode == 0, result.stderr
    code, message = result.stdout.split("\n", 1)
    assert int(code) == errno.EFBIG
    assert str(path) in message and "file-size limit" in message
    assert "bytes needed" in message and "The previous m.safetensors is intact" in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_fit_stops_on_a_full_disk_with_the_last_checkpoint_intact(tmp_path):
    result = _run(
        f"""
        import resource
        import ncps_mlx
        from ncps_mlx import CfC
        from ncps_mlx.datasets import sine_waves
        from ncps_mlx.training import fit

        class Limit:  # after the first epoch's checkpoint, no file may grow past 1 KiB
            def on_train_begin(self, trainer): pass
            def on_epoch_begin(self, trainer, epoch):
                if epoch == 2:
                    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
            def on_batch_end(self, trainer, batch, logs): pass
            def on_epoch_end(self, trainer, epoch, logs): pass
            def on_train_end(self, trainer): pass
            def state_dict(self): return {{}}
            def load_state_dict(self, state): pass

        try:
            fit(CfC(2, 8, backbone_units=8, proj_size=1), sine_waves(16, 10, seed=1),
                epochs=3, batch_size=8, checkpoint_dir={str(tmp_path)!r}, progress=False,
                callbacks=[Limit()])
        except ncps_mlx.WriteError as error:
            print(error)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "last.safetensors" in result.stdout and "is intact" in result.stdout
    header, _ = ncps_mlx.io.read_checkpoint(tmp_path / "last.safetensors")
    assert header["metadata"]["training"]["epoch"] == 1
    assert _files.temporaries(tmp_path, ["last.safetensors"]) == []


def test_a_disk_without_the_space_is_refused_before_writing(tmp_path, monkeypatch):
    class Usage:
        free = 100

    monkeypatch.setattr(_files.shutil, "disk_usage", lambda _: Usage)
    with pytest.raises(
        WriteError,
        match=r"the disk is full \(\S+ bytes needed, 100 bytes free\)\. Nothing was written",
    ):
        ncps_mlx.save(CfC(2, 8), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.EACCES, "permission denied"),
        (errno.EROFS, "the file system is read-only"),
        (errno.ENOSPC, "the disk is full"),
        (errno.EIO, "Input/output error"),
    ],
)
def test_os_errors_name_the_path_the_reason_and_what_is_kept(tmp_path, monkeypatch, code, reason):
    path = ncps_mlx.save(CfC(2, 4), tmp_path / "m.safetensors")

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(_files.tempfile, "mkstemp", refuse)
    with pytest.raises(WriteError) as caught:
        ncps_mlx.save(CfC(2, 4), path)
    message = str(caught.value)
    assert caught.value.errno == code and isinstance(caught.value, OSError)
    assert str(path) in message and reason in message
    assert "The previous m.safetensors is intact" in message
    assert message.endswith(see("write-failed"))


def test_a_save_flushes_the_file_and_its_folder(tmp_path, monkeypatch):
    flushed = []
    real_fsync = os.fsync

    def record(fd):
        flushed.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(_files.os, "fsync", record)
    ncps_mlx.save(CfC(2, 4), tmp_path / "m.safetensors")
    assert flushed == [False, True]  # the file's bytes, then the folder's rename


def test_temporaries_left_by_a_kill_are_found_and_removed(tmp_path):
    names = ["last.safetensors", "best.safetensors"]
    left = [
        tmp_path / ".last.safetensors.ab12.partial.safetensors",
        tmp_path / ".best.safetensors.x.partial",
    ]
    keep = [tmp_path / "last.safetensors", tmp_path / ".other.partial", tmp_path / "notes.partial"]
    for path in left + keep:
        path.write_bytes(b"x")
    assert sorted(_files.temporaries(tmp_path, names)) == sorted(left)
    assert sorted(_files.remove_temporaries(tmp_path, names)) == sorted(left)
    assert sorted(tmp_path.iterdir()) == sorted(keep)


def test_a_file_without_a_digest_loads_with_a_warning(tmp_path):
    model = LTC(3, AutoNCP(10, 2))
    path = ncps_mlx.save(model, tmp_path / "m.safetensors")
    arrays, metadata = mx.load(str(path), return_metadata=True)
    del metadata["ncps_mlx.sha256"]
    mx.save_safetensors(str(path), arrays, metadata=metadata)
    with pytest.warns(ncps_mlx.UnverifiedCheckpointWarning, match="carries no digest"):
        loaded = ncps_mlx.load(path)
    x = mx.random.normal((2, 5, 3))
    np.testing.assert_array_equal(np.array(loaded(x)[0]), np.array(model(x)[0]))


@pytest.mark.parametrize("where", ["config", "tensor"])
def test_a_changed_byte_is_refused_by_the_digest(tmp_path, where):
    path = ncps_mlx.save(CfC(3, 8), tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    # A digit of the config's epsilon-free fields, or the last byte of the last tensor.
    index = data.index(b'"input_size\\": 3') + 15 if where == "config" else len(data) - 1
    data[index] ^= 0x01  # "3" -> "2" in the config; a mantissa bit in the tensor
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the digest saved with it"):
        ncps_mlx.load(path)


def test_sizes_beyond_the_load_limits_need_the_callers_consent(tmp_path):
    model = LTC(3, 6, ode_unfolds=2000)
    path = ncps_mlx.save(model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match=r"ode_unfolds: 2000 is above the limit 1024"):
        ncps_mlx.load(path)
    loaded = ncps_mlx.load(path, limits=LoadLimits(ode_unfolds=2000))
    assert loaded.rnn_cell.ode_unfolds == 2000


def test_resume_refuses_the_state_of_another_optimizer(tmp_path):
    import mlx.optimizers as optim

    from ncps_mlx.datasets import sine_waves
    from ncps_mlx.training import fit

    data = sine_waves(16, 10, seed=1)
    kwargs = dict(epochs=1, batch_size=8, checkpoint_dir=tmp_path, progress=False)
    fit(CfC(2, 8, proj_size=1), data, optimizer=optim.SGD(0.1, momentum=0.9), **kwargs)
    with pytest.raises(CheckpointError, match="does not fit this optimizer"):
        fit(
            CfC(2, 8, proj_size=1),
            data,
            optimizer=optim.Adam(1e-3),
            resume=True,
            **{**kwargs, "epochs": 2},
        )
