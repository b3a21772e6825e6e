"""The monitor watching another process (``ncps-mlx monitor --pid``), backends that cannot
run saying why, and the plot's panels, units and step-time axis."""

import os
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from ncps_mlx import cli
from ncps_mlx.errors import see
from ncps_mlx.monitor import Monitor, Run
from ncps_mlx.monitor.backends import Backend
from ncps_mlx.monitor.backends.iokit import IOAcceleratorBackend
from ncps_mlx.monitor.backends.ioreport import IOReportBackend
from ncps_mlx.monitor.backends.nvml import NVMLBackend
from ncps_mlx.monitor.backends.powermetrics import PowermetricsBackend
from ncps_mlx.monitor.backends.process import PsutilBackend
from ncps_mlx.monitor.live import LiveView, LiveViewError, backend_names, live_line

psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
ALLOCATED = 96 * MIB
# A stand-in for a training run: allocates when told, exits when its stdin closes.
CHILD = f"""
import sys
print("started", flush=True)
sys.stdin.readline()
block = b"x" * {ALLOCATED}  # written, so resident
print("allocated", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def child():
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline() == "started\n"
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def _allocate(process):
    process.stdin.write("go\n")
    process.stdin.flush()
    assert process.stdout.readline() == "allocated\n"


def _end(process):
    process.stdin.close()  # its readline returns '' and it exits


def _wait_for(condition, timeout=30.0):
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.01)
    assert condition()


def _exit_code(argv):
    """What ``ncps-mlx ARGV`` exits with, argparse's own exits included."""
    try:
        return cli.main(argv)
    except SystemExit as stopped:
        return stopped.code


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # reaped: no process has this pid any more
    return process.pid


# -- the psutil backend on another process --------------------------------------------
def test_psutil_backend_samples_the_given_process_not_its_own(child):
    backend = PsutilBackend(pid=child.pid)
    assert backend.probe()
    before = backend.sample()
    _allocate(child)
    after = backend.sample()
    assert after["process_rss_bytes"] - before["process_rss_bytes"] >= 0.9 * ALLOCATED
    # The first CPU shares cover the microseconds since the probe: left out, not noise.
    assert before["cpu_percent"] is None and before["system_cpu_percent"] is None
    assert after["cpu_percent"] >= 0 and after["system_cpu_percent"] >= 0
    assert not backend.process_ended


def test_a_process_that_ended_gives_none_and_the_machine_figures_go_on(child):
    backend = PsutilBackend(pid=child.pid)
    assert backend.probe()
    backend.sample()
    _end(child)
    child.wait()
    figures = backend.sample()
    assert backend.process_ended
    assert figures["cpu_percent"] is None and figures["process_rss_bytes"] is None
    assert figures["system_memory_used_bytes"] > 0


def test_a_zombie_counts_as_ended(child):
    backend = PsutilBackend(pid=child.pid)
    assert backend.probe()
    _end(child)  # not waited for: it stays a zombie, which psutil says is running
    _wait_for(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE)
    assert psutil.Process(child.pid).is_running()
    assert backend.sample()["process_rss_bytes"] is None and backend.process_ended


def test_the_own_process_is_the_default():
    backend = PsutilBackend()
    assert backend.probe()
    backend.sample()
    assert backend.sample()["process_rss_bytes"] == pytest.approx(
        psutil.Process().memory_info().rss, rel=0.5
    )


# -- the live view of another process -------------------------------------------------
def test_live_view_follows_a_process_until_it_exits(child, tmp_path):
    view = LiveView("auto", pid=child.pid, interval=0.02).start()
    assert "mlx" not in [b.name for b in view.monitor.backends]  # the view's own memory
    lines = []
    follower = threading.Thread(target=view.follow, args=(lines.append,))
    follower.start()
    _allocate(child)
    rss_column = 2  # time, cpu%, rss MiB
    _wait_for(lambda: any(_cell(line, rss_column) >= ALLOCATED / MIB for line in lines[3:]))
    _end(child)
    follower.join(timeout=60)
    assert not follower.is_alive()
    view.stop()
    assert lines[0].startswith(f"watching process {child.pid} (")
    assert lines[1].startswith("backends: psutil")
    assert lines[-1] == f"process {child.pid} ({view.process_name}) exited; the view ends"
    saved = Run.load(view.save(tmp_path / "watched.jsonl"))
    assert saved.meta["pid"] == child.pid and saved.meta["process"] == view.process_name
    assert max(s["process_rss_bytes"] or 0 for s in saved.samples) >= ALLOCATED


def _cell(line, column):
    cells = line.split()
    try:
        return float(cells[column])
    except (IndexError, ValueError):  # a '-' cell, or not a sample line
        return float("-inf")


def test_cli_watches_a_process_in_another_terminal(child, tmp_path):
    monitor = subprocess.Popen(
        [sys.executable, "-u", "-m", "ncps_mlx.cli", "monitor", "--pid", str(child.pid),
         "--interval", "0.05", "--out", "watched.jsonl"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    seen = [monitor.stdout.readline() for _ in range(4)]  # process, backends, header, sample
    _end(child)
    child.wait()
    rest, err = monitor.communicate(timeout=60)
    assert monitor.returncode == 0, err
    assert seen[0].startswith(f"watching process {child.pid} ")
    lines = rest.splitlines()
    assert lines[-2].startswith(f"process {child.pid} (") and lines[-2].endswith("the view ends")
    assert lines[-1] == "wrote watched.jsonl"
    assert Run.load(tmp_path / "watched.jsonl").meta["pid"] == child.pid


def test_a_missing_pid_is_a_clear_error(capsys):
    pid = _dead_pid()
    assert cli.main(["monitor", "--pid", str(pid)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ncps-mlx monitor: no process has pid {pid}")
    assert "Traceback" not in err
    with pytest.raises(LiveViewError, match=f"no process has pid {pid}"):
        LiveView(pid=pid)


@pytest.mark.parametrize("pid", ["0", "-3", "abc"])
def test_a_pid_that_is_not_a_positive_number_is_a_usage_error(pid, capsys):
    assert _exit_code(["monitor", "--pid", pid]) == 2
    assert "--pid" in capsys.readouterr().err


def test_watching_a_process_needs_psutil(monkeypatch, child):
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now fails
    with pytest.raises(LiveViewError, match=r"needs psutil: pip install 'ncps-mlx\[monitor\]'"):
        LiveView(pid=child.pid)


def test_backend_names_with_and_without_a_pid():
    assert backend_names("auto") == ["mlx", "psutil", "nvml", "ioreport", "ioaccelerator"]
    assert backend_names("auto", pid=7) == ["psutil", "nvml", "ioreport", "ioaccelerator"]
    assert backend_names(" nvml, psutil,nvml ") == ["nvml", "psutil"]
    assert backend_names("nvml", pid=7) == ["psutil", "nvml"]  # psutil watches the pid
    with pytest.raises(ValueError, match="backend 'mlx' reads the MLX memory of the monitor"):
        backend_names("mlx,psutil", pid=7)
    with pytest.raises(ValueError, match=r"unknown backend 'gpu'; use 'auto' or .*'nvml'"):
        backend_names("mlx,gpu")
    with pytest.raises(ValueError, match="no backend named"):
        backend_names(",")


# -- backends that cannot run -----------------------------------------------------------
def test_cli_says_which_backend_cannot_run_why_and_what_can(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML bindings, on any machine
    assert cli.main(["monitor", "--backends", "nvml", "--duration", "0.1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no table of dashes
    lines = captured.err.splitlines()
    assert lines[0] == (
        "ncps-mlx monitor: backend 'nvml' cannot run here: it needs an NVIDIA GPU and "
        "`pip install nvidia-ml-py`, which is not installed"
    )
    assert lines[1].startswith("Available here: mlx, psutil")
    assert lines[2] == see("monitor-backends")


@pytest.mark.skipif(sys.platform == "darwin", reason="the macOS backends may run there")
def test_cli_names_every_backend_that_cannot_run(capsys):
    assert cli.main(["monitor", "--backends", "mlx,ioreport,powermetrics"]) == 1
    err = capsys.readouterr().err
    assert "backend 'ioreport' cannot run here: it needs macOS (this is Linux)" in err
    assert "backend 'powermetrics' cannot run here: it needs macOS (this is Linux)" in err
    assert "'mlx'" not in err.split("Available here")[0]  # it runs


@pytest.mark.parametrize(
    "arguments,said",
    [(["--backends", "mlx,gpu"], "--backends: unknown backend 'gpu'"),
     (["--backends", "mlx", "--pid", "1"], "backend 'mlx' reads the MLX memory of the monitor"),
     (["report", "--pid", "1"], "--pid is for the live view")],
)  # fmt: skip
def test_cli_usage_errors_exit_2_with_one_message(arguments, said, capsys):
    code = _exit_code(["monitor", *arguments])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"ncps-mlx monitor: {said}")
    assert "Traceback" not in err


def test_cli_auto_lists_what_is_not_available(capsys):
    assert cli.main(["monitor", "--backends", "auto", "--interval", "0.02",
                     "--duration", "0.1"]) == 0  # fmt: skip
    backends_line = capsys.readouterr().out.splitlines()[0]
    assert backends_line.startswith("backends: mlx")
    if sys.platform != "darwin":
        assert "not available here: " in backends_line and "ioreport" in backends_line


class Absent(Backend):
    name = "absent"

    def probe(self):
        return False

    def why_unavailable(self):
        return "the device is unplugged"


class Raises(Backend):
    name = "raises"

    def probe(self):
        raise RuntimeError("library mismatch")


def test_monitor_records_why_each_backend_did_not_start():
    monitor = Monitor(0.05, [Absent(), Raises(), "mlx"], health=False)
    with pytest.warns(RuntimeWarning, match="'raises' could not start"), monitor:
        pass
    assert [b.name for b in monitor.backends] == ["mlx"]
    assert monitor.unavailable == {
        "absent": "the device is unplugged",
        "raises": "its probe raised RuntimeError('library mismatch')",
    }


def test_each_backend_says_why_it_cannot_run():
    linux = lambda: "Linux"  # noqa: E731
    darwin = lambda: "Darwin"  # noqa: E731
    for backend in (IOReportBackend(system=linux), IOAcceleratorBackend(system=linux),
                    PowermetricsBackend(system=linux)):  # fmt: skip
        assert not backend.probe()
        assert backend.why_unavailable() == "it needs macOS (this is Linux)"
    assert "libIOReport" in IOReportBackend(system=darwin).why_unavailable()
    assert "PerformanceStatistics" in IOAcceleratorBackend(system=darwin).why_unavailable()
    assert "sudo" in PowermetricsBackend(system=darwin, is_root=lambda: False).why_unavailable()

    def no_driver():
        raise OSError("libnvidia-ml.so.1 not found")

    nvml = NVMLBackend(nvml=types.SimpleNamespace(nvmlInit=no_driver))
    assert not nvml.probe()
    assert (
        nvml.why_unavailable()
        == "NVML found no NVIDIA GPU 0 or driver (libnvidia-ml.so.1 not found)"
    )
    gone = PsutilBackend(pid=_dead_pid())
    assert not gone.probe()
    assert gone.why_unavailable().startswith(
        f"psutil cannot read process {gone.pid} (NoSuchProcess"
    )


def test_psutil_backend_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)
    backend = PsutilBackend()
    assert not backend.probe()
    assert backend.why_unavailable() == "psutil is not installed: pip install 'ncps-mlx[monitor]'"


def test_live_line_shows_dashes_for_absent_figures():
    line = live_line({"time_s": 1.25, "cpu_percent": 50.0, "process_rss_bytes": 3 * MIB})
    assert line.split() == ["1.2", "50.0", "3.0", "-", "-", "-", "-", "-", "-"]
