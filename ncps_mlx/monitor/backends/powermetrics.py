"""CPU, GPU and Neural Engine power, GPU clock and busy share from ``powermetrics``.

``powermetrics`` is Apple's own tool, so its figures are the reference the sudoless
`ioreport` backend is checked against; but it must run as root. This backend is
therefore never picked by ``backends="auto"``: ask for it by name, as root or with a
``sudo`` that needs no password (a NOPASSWD rule). It never prompts: `probe` runs
``sudo -n true``, which fails at once instead of asking.

Each `PowermetricsBackend.sample` runs
``powermetrics --samplers cpu_power,gpu_power,ane_power -i <window_ms> -n 1 -f plist``
and so blocks for ``window_ms``: its figures are the means over that window just before
the sample, not over the whole interval since the previous one. Memory bandwidth is not
reported: the ``bandwidth`` sampler was removed in macOS 13.

Figures, from the plist report (key names as in published captures):

* ``cpu_power_w`` / ``gpu_power_w`` / ``ane_power_w``: ``processor`` -> ``cpu_power`` /
  ``gpu_power`` / ``ane_power`` in mW, or else the ``*_energy`` keys in mJ over
  ``elapsed_ns`` (older macOS reports only those; ``gpu`` -> ``gpu_energy`` too).
* ``gpu_frequency_mhz``: ``gpu`` -> ``freq_hz``, which despite its name holds MHz for
  the GPU (e.g. 338 or 1278.5); a value that can only be Hz is converted.
* ``gpu_utilization_percent``: ``gpu`` -> 100 x (1 - ``idle_ratio``).

The subprocess call is injectable (``run``), so `parse_powermetrics_plist` and the
backend's handling of failures and timeouts are tested everywhere with recorded output;
only the real ``powermetrics`` run needs a Mac.
"""

import math
import os
import platform
import plistlib
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from ..._checks import check_int
from .base import Backend, Figures, off_macos

SAMPLERS = ("cpu_power", "gpu_power", "ane_power")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _first_number(*values: Any) -> float | None:
    return next((n for n in map(_number, values) if n is not None), None)


def _last_report(output: bytes) -> dict[str, Any]:
    """The last plist document of the output (powermetrics separates reports by NUL)."""
    chunks = [chunk.strip(b"\x00 \t\r\n") for chunk in output.split(b"\x00")]
    plists = [c for c in chunks if c.startswith((b"<?xml", b"<plist", b"bplist"))]
    if not plists:
        raise ValueError("powermetrics printed no plist report")
    report = plistlib.loads(plists[-1])
    if not isinstance(report, dict):
        raise ValueError("powermetrics' plist report is not a dictionary")
    return report


def _watts(
    milliwatts: float | None, millijoules: float | None, seconds: float | None
) -> float | None:
    if milliwatts is not None:
        return milliwatts / 1000.0
    if millijoules is not None and seconds:
        return millijoules / 1000.0 / seconds
    return None


def _gpu_mhz(freq: float | None) -> float | None:
    if freq is None or freq <= 0:  # 0: powermetrics saw no active time to average over
        return None
    return freq / 1e6 if freq >= 1e5 else freq  # no GPU clock reaches 100 GHz, nor 100 kHz


def _busy_percent(idle_ratio: float | None) -> float | None:
    if idle_ratio is None or not 0.0 <= idle_ratio <= 1.0:
        return None
    return 100.0 * (1.0 - idle_ratio)


def parse_powermetrics_plist(output: bytes) -> Figures:
    """The figures in ``powermetrics -f plist`` output (its last report); None for what
    the report lacks. Raises ValueError when the output holds no plist report."""
    report = _last_report(output)
    processor = report.get("processor") if isinstance(report.get("processor"), dict) else {}
    gpu = report.get("gpu") if isinstance(report.get("gpu"), dict) else {}
    elapsed_ns = _number(report.get("elapsed_ns"))
    seconds = elapsed_ns / 1e9 if elapsed_ns and elapsed_ns > 0 else None
    return {
        "cpu_power_w": _watts(
            _number(processor.get("cpu_power")), _number(processor.get("cpu_energy")), seconds
        ),
        "gpu_power_w": _watts(
            _first_number(processor.get("gpu_power"), gpu.get("gpu_power")),
            _first_number(processor.get("gpu_energy"), gpu.get("gpu_energy")),
            seconds,
        ),
        "ane_power_w": _watts(
            _number(processor.get("ane_power")), _number(processor.get("ane_energy")), seconds
        ),
        "gpu_frequency_mhz": _gpu_mhz(_number(gpu.get("freq_hz"))),
        "gpu_utilization_percent": _busy_percent(_number(gpu.get("idle_ratio"))),
    }


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", "replace")
    return output or ""


def _is_root() -> bool:
    return os.geteuid() == 0


class PowermetricsBackend(Backend):
    """Power, GPU clock and GPU busy share from ``powermetrics`` (macOS, root or
    password-less sudo; only when asked for by name). See the module docstring.

    Args:
        window_ms: The sampling window of each run (``-i``); `sample` blocks this
            long. Default: ``250``.
        timeout_s: Seconds a run may take before `sample` gives up. Default: the
            window plus 10 s (powermetrics' start-up can take a few seconds).
        samplers: powermetrics samplers to run; one this macOS lacks makes powermetrics
            fail, and `sample` then raises.
        run: ``subprocess.run``, replaceable for tests.
        system: ``platform.system``, replaceable for tests.
        is_root: Whether this process is root (then ``sudo`` is not used).
    """

    name = "powermetrics"
    keys = {
        "cpu_power_w": "CPU power (powermetrics, mean over its window)",
        "gpu_power_w": "GPU power (powermetrics, mean over its window)",
        "ane_power_w": "Neural Engine power (powermetrics, mean over its window)",
        "gpu_frequency_mhz": "mean GPU clock while active (powermetrics)",
        "gpu_utilization_percent": "share of the window the GPU was not idle (powermetrics)",
    }

    def __init__(
        self,
        window_ms: int = 250,
        *,
        timeout_s: float | None = None,
        samplers: Sequence[str] = SAMPLERS,
        run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
        system: Callable[[], str] = platform.system,
        is_root: Callable[[], bool] = _is_root,
    ):
        check_int("Monitor", "window_ms", window_ms)
        self.window_ms = window_ms
        self.timeout_s = timeout_s if timeout_s is not None else window_ms / 1000 + 10
        self._samplers = ",".join(samplers)
        self._run = run
        self._system = system
        self._is_root = is_root

    def probe(self) -> bool:
        """Whether powermetrics can run here: on macOS, as root or with password-less
        `sudo` (tried with `sudo -n true`, which never prompts). Never raises."""
        try:
            if self._system() != "Darwin":
                return False
            if self._is_root():
                return True
            # -n: fail at once where a password would be needed; never prompt.
            result = self._run(
                ["sudo", "-n", "true"], capture_output=True, timeout=5, check=False,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            return result.returncode == 0
        except Exception:
            return False

    def why_unavailable(self) -> str:
        """That the backend needs macOS, or, on a Mac, root or password-less sudo."""
        return off_macos(
            self._system(),
            "powermetrics needs root or password-less sudo (it runs `sudo -n` and never prompts)",
        )

    def command(self) -> list[str]:
        """The command `sample` runs."""
        command = [
            "powermetrics", "--samplers", self._samplers,
            "-i", str(self.window_ms), "-n", "1", "-f", "plist",
        ]  # fmt: skip
        return command if self._is_root() else ["sudo", "-n", *command]

    def sample(self) -> Figures:
        """Run powermetrics for one window and return its figures; blocks for the window.

        Raises:
            RuntimeError: powermetrics did not finish within `timeout_s`, or failed.
        """
        try:
            result = self._run(
                self.command(), capture_output=True, timeout=self.timeout_s, check=False,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"powermetrics did not finish within {self.timeout_s} s") from error
        if result.returncode != 0:
            message = _text(result.stderr).strip()[-200:]
            raise RuntimeError(f"powermetrics exited with status {result.returncode}: {message}")
        return parse_powermetrics_plist(result.stdout)
