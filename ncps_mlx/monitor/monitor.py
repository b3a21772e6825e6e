"""The monitor: hardware figures sampled on a background thread, next to step times."""

import contextlib
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import mlx.core as mx

from .._checks import check_number
from ..costs import step_traffic
from ..errors import see
from ..rnn import RNN
from . import backends as backend_registry
from .backends import Backend
from .chips import Chip, detect_chip
from .health import HealthWatch
from .report import Run


class StepHandle:
    """What ``with monitor.step(...) as step:`` yields: set `loss` to watch it."""

    def __init__(self) -> None:
        self.loss: float | None = None


class Monitor:
    """Samples memory, bandwidth and utilization while a model trains.

    Use it as a context manager (or call [`start`][ncps_mlx.monitor.Monitor.start] and
    [`stop`][ncps_mlx.monitor.Monitor.stop]) and wrap each training step in
    [`step`][ncps_mlx.monitor.Monitor.step]:

    ```python
    with Monitor(model=model, seq_len=128) as mon:
        for x, y in batches:
            with mon.step(samples=len(x)) as step:
                step.loss = train_step(x, y)
    print(mon.summary())
    ```

    Backends that fail are disabled with one warning; neither a failing backend, an
    exception in the step nor a KeyboardInterrupt disturbs the training or the records.

    Args:
        interval: Seconds between samples. Default: ``0.5``.
        backends: ``"auto"`` (every sudoless source this machine has) or a list of
            backend names / `Backend` instances.
        model: The model being trained; with ``seq_len`` it gives each step's estimated
            bytes ([`step_traffic`][ncps_mlx.costs.step_traffic]; left out for a cell that declares
            no footprint).
        seq_len: Time steps per training sequence.
        train: Whether the steps are training steps (else inference). Default: ``True``.
        optimizer_slots: Arrays the optimizer keeps per parameter. Default: ``2`` (Adam).
        chip: The Apple chip, for bandwidth as a fraction of its peak; detected by default.
        health: Watch the loss for NaN, divergence, plateaus and overfitting. Default:
            ``True``.
    """

    def __init__(
        self,
        interval: float = 0.5,
        backends: str | Iterable[str | Backend] = "auto",
        *,
        model: RNN | None = None,
        seq_len: int | None = None,
        train: bool = True,
        optimizer_slots: int = 2,
        chip: Chip | None = None,
        health: bool = True,
    ):
        check_number("Monitor", "interval", interval, above=0)  # seconds
        if (model is None) != (seq_len is None):
            raise ValueError("[Monitor] pass 'model' and 'seq_len' together (or neither)")
        self.interval = float(interval)
        self._candidates = backend_registry.create(backends)
        self._traffic_args = (model, seq_len, train, optimizer_slots)
        self.chip = chip if chip is not None else detect_chip()
        self.health = HealthWatch() if health else None
        self.backends: list[Backend] = []
        #: The backends that did not start, by name, with the reason (after start()).
        self.unavailable: dict[str, str] = {}
        self.samples: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.perf_counter()
        self._traffic_cache: dict[int, int | None] = {}

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> "Monitor":
        """Probe the backends and start sampling in the background."""
        if self._thread is not None:
            return self
        self.backends, self.unavailable = [], {}
        for backend in self._candidates:
            reason = _probe(backend)
            if reason is None:
                self.backends.append(backend)
            else:
                self.unavailable[backend.name] = reason
        self._t0 = time.perf_counter()
        self._stop.clear()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="ncps-mlx-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (taking a last sample) and release the backends. Idempotent."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._sample()
        for backend in self.backends:
            with contextlib.suppress(Exception):
                backend.close()

    @property
    def running(self) -> bool:
        """Whether the background sampling is on (between start and stop)."""
        return self._thread is not None

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        record: dict[str, Any] = {"time_s": self._now()}
        for backend in list(self.backends):
            try:
                record.update(backend.sample())
            except Exception as error:  # a broken source must never stop the training
                self.backends.remove(backend)
                warnings.warn(
                    f"[Monitor] backend {backend.name!r} failed and is disabled: {error!r}\n"
                    + see("monitor-backends"),
                    RuntimeWarning,
                    stacklevel=2,
                )
        with self._lock:
            self.samples.append(record)

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    # -- steps -----------------------------------------------------------------------
    @contextlib.contextmanager
    def step(
        self, samples: int | None = None, *, est_bytes: int | None = None
    ) -> Iterator[StepHandle]:
        """Time one training step; MLX is synchronized first so the time is real.

        Args:
            samples: Sequences in the step (the batch size), for throughput and bytes.
            est_bytes: Bytes the step moves, overriding the model-based estimate.
        """
        handle = StepHandle()
        mx.synchronize()
        start = time.perf_counter()
        yield handle  # an exception here propagates and records no step
        mx.synchronize()
        elapsed = time.perf_counter() - start
        self._record_step(elapsed, samples, est_bytes, handle.loss)

    def _record_step(
        self, elapsed: float, samples: int | None, est_bytes: int | None, loss: Any
    ) -> None:
        if est_bytes is None and samples is not None:
            est_bytes = self._estimated_bytes(samples)
        bandwidth = est_bytes / elapsed if est_bytes is not None and elapsed > 0 else None
        peak = self.chip.peak_bandwidth_bytes_per_s if self.chip else None
        record = {
            "step": len(self.steps),
            "time_s": self._now(),
            "step_time_s": elapsed,
            "samples_per_s": samples / elapsed if samples and elapsed > 0 else None,
            "est_bytes": est_bytes,
            "est_bandwidth_bytes_per_s": bandwidth,
            "est_bandwidth_fraction": bandwidth / peak if bandwidth and peak else None,
        }
        if loss is not None:
            record["loss"] = float(loss)
        with self._lock:
            self.steps.append(record)
        if loss is not None and self.health is not None:
            self._add_events(self.health.observe_loss(record["step"], record["loss"]))

    def _estimated_bytes(self, samples: int) -> int | None:
        model, seq_len, train, slots = self._traffic_args
        if model is None:
            return None
        if samples not in self._traffic_cache:
            traffic = step_traffic(model, samples, seq_len, train=train, optimizer_slots=slots)
            self._traffic_cache[samples] = traffic.total if traffic is not None else None
        return self._traffic_cache[samples]

    def log_validation(self, val_loss: Any, train_loss: Any = None) -> None:
        """Record a validation loss (checked for a growing train/validation gap)."""
        step = max(len(self.steps) - 1, 0)
        with self._lock:
            self.events.append(
                {"event": "validation", "step": step, "time_s": self._now(),
                 "value": float(val_loss), "message": "validation loss"}
            )  # fmt: skip
        if self.health is not None:
            train = None if train_loss is None else float(train_loss)
            self._add_events(self.health.observe_validation(step, float(val_loss), train))

    def _add_events(self, events: list) -> None:
        with self._lock:
            for event in events:
                self.events.append({**event.as_record(), "time_s": self._now()})

    # -- results ---------------------------------------------------------------------
    @property
    def run(self) -> Run:
        """A snapshot of everything recorded so far."""
        with self._lock:
            return Run(
                meta={
                    "interval_s": self.interval,
                    "backends": [b.name for b in self.backends],
                    "chip": self.chip.name if self.chip else None,
                    "peak_bandwidth_bytes_per_s": (
                        self.chip.peak_bandwidth_bytes_per_s if self.chip else None
                    ),
                },
                samples=[dict(s) for s in self.samples],
                steps=[dict(s) for s in self.steps],
                events=[dict(e) for e in self.events],
            )

    def save(self, path: Any) -> Any:
        """Write the records to ``.jsonl`` or ``.csv`` (by suffix); returns the path."""
        return self.run.save(path)

    def summary(self) -> Any:
        """Totals, means and peaks as a dict (prints as a table)."""
        return self.run.summary()

    def plot(self, path: Any) -> Any:
        """Utilization, bandwidth, memory and step time over time, saved to ``path``."""
        return self.run.plot(path)

    def prometheus(self) -> str:
        """The latest figures in Prometheus' text exposition format."""
        return self.run.prometheus()


def _probe(backend: Backend) -> str | None:
    """None when ``backend`` runs here, else why it does not."""
    try:
        if backend.probe():
            return None
    except Exception as error:
        warnings.warn(
            f"[Monitor] backend {backend.name!r} could not start: {error!r}\n"
            + see("monitor-backends"),
            RuntimeWarning,
            stacklevel=3,
        )
        return f"its probe raised {error!r}"
    try:
        return backend.why_unavailable()
    except Exception as error:  # a reason must not cost the run
        return f"its source is not available on this machine ({error!r})"
