"""The monitor's thin platform layers where they do not depend on a Mac or a GPU: the
ctypes signature helper, the IOKit layer's one query, chip detection when its commands
fail, NVML's import and shutdown, powermetrics' odd outputs, and backend specs."""

import ctypes
import os
import subprocess
import sys
import types

import pytest

from ncps_mlx.monitor.backends import create
from ncps_mlx.monitor.backends._cf import declare
from ncps_mlx.monitor.backends.base import Backend
from ncps_mlx.monitor.backends.iokit import PROPERTY, SERVICE_CLASS, _IOKitLibrary
from ncps_mlx.monitor.backends.mlx_memory import MLXMemoryBackend
from ncps_mlx.monitor.backends.nvml import NVMLBackend
from ncps_mlx.monitor.backends.powermetrics import PowermetricsBackend, parse_powermetrics_plist
from ncps_mlx.monitor.chips import Chip, detect_chip

LIBC = pytest.mark.skipif(sys.platform == "win32", reason="needs the C library through ctypes")


@LIBC
def test_declare_gives_a_c_function_its_signature():
    libc = ctypes.CDLL(None)
    strlen = declare(libc, "strlen", ctypes.c_size_t, ctypes.c_char_p)
    assert (strlen.restype, strlen.argtypes) == (ctypes.c_size_t, [ctypes.c_char_p])
    assert strlen(b"monitor") == 7
    with pytest.raises(AttributeError):
        declare(libc, "no_such_function_in_libc", None)


def test_the_iokit_layer_asks_for_the_accelerators_performance_statistics():
    asked = []

    class Registry:
        def properties(self, service_class, key):
            asked.append((service_class, key))
            return [{"Device Utilization %": 12}]

    assert _IOKitLibrary(Registry()).performance_statistics() == [{"Device Utilization %": 12}]
    assert asked == [(SERVICE_CLASS, PROPERTY)] == [("IOAccelerator", "PerformanceStatistics")]


def _runner(outputs):
    """A subprocess.run stand-in: each command's stdout, or the exception to raise."""

    def run(command, **kwargs):
        result = outputs[command[0]]
        if isinstance(result, BaseException):
            raise result
        return types.SimpleNamespace(stdout=result)

    return run


@pytest.mark.parametrize(
    "outputs, chip",
    [
        ({"sysctl": FileNotFoundError("sysctl")}, None),
        ({"sysctl": subprocess.TimeoutExpired("sysctl", 5)}, None),
        ({"sysctl": "Intel(R) Core(TM) i7\n"}, None),
        # The GPU core count is unreadable: a chip whose bandwidth needs it has none.
        ({"sysctl": "Apple M3 Max\n", "ioreg": OSError("ioreg")}, Chip("M3 Max", None, None)),
        ({"sysctl": "Apple M2\n", "ioreg": ""}, Chip("M2", None, 100e9)),
    ],
    ids=["no-sysctl", "sysctl-hangs", "not-apple", "no-ioreg", "no-core-count"],
)
def test_chip_detection_when_its_commands_fail(outputs, chip):
    assert detect_chip(run=_runner(outputs), system=lambda: "Darwin") == chip


class _FakeNVML:
    def __init__(self):
        self.calls = []

    def nvmlInit(self):
        self.calls.append("init")

    def nvmlDeviceGetHandleByIndex(self, index):
        self.calls.append(f"handle {index}")
        return f"gpu{index}"

    def nvmlShutdown(self):
        self.calls.append("shutdown")


def test_nvml_is_imported_as_pynvml_and_shut_down_once(monkeypatch):
    fake = _FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    backend = NVMLBackend(index=1)
    assert backend.probe()
    backend.close()
    backend.close()  # a second close has nothing left to shut down
    assert fake.calls == ["init", "handle 1", "shutdown"]


def test_nvml_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    backend = NVMLBackend()
    assert not backend.probe()
    assert backend.why_unavailable() == (
        "it needs an NVIDIA GPU and `pip install nvidia-ml-py`, which is not installed"
    )
    backend.close()  # never started: nothing to shut down, no error


def test_a_plist_report_that_is_not_a_dictionary_is_refused():
    plist = b'<?xml version="1.0"?><plist version="1.0"><array><integer>1</integer></array></plist>'
    with pytest.raises(ValueError, match="powermetrics' plist report is not a dictionary"):
        parse_powermetrics_plist(plist)


def test_a_failing_powermetrics_without_stderr_still_gives_its_status():
    def run(command, **kwargs):
        return types.SimpleNamespace(returncode=1, stdout=b"", stderr=None)

    backend = PowermetricsBackend(run=run, system=lambda: "Darwin", is_root=lambda: True)
    with pytest.raises(RuntimeError, match=r"^powermetrics exited with status 1: $"):
        backend.sample()


def test_powermetrics_goes_through_sudo_unless_this_process_is_root():
    command = PowermetricsBackend(window_ms=250).command()  # root: this process's user
    assert (command[:2] == ["sudo", "-n"]) == (os.geteuid() != 0)
    assert command[-6:] == ["-i", "250", "-n", "1", "-f", "plist"]


def test_a_backend_that_does_not_sample_says_so():
    with pytest.raises(NotImplementedError):
        Backend().sample()
    assert Backend().probe() and Backend().why_unavailable() == (
        "its source is not available on this machine"
    )


def test_one_backend_may_be_named_alone():
    (backend,) = create("mlx")
    assert isinstance(backend, MLXMemoryBackend)
