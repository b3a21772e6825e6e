"""Training-health signals from the loss stream: NaN, divergence, plateau and overfitting.

[`HealthWatch`][ncps_mlx.monitor.HealthWatch] reads the training loss of each step
([`HealthWatch.observe_loss`][ncps_mlx.monitor.HealthWatch.observe_loss]) and the validation loss of
each evaluation
([`HealthWatch.observe_validation`][ncps_mlx.monitor.HealthWatch.observe_validation]) and returns a
[`HealthEvent`][ncps_mlx.monitor.HealthEvent] when one of four conditions starts:

``"nan"``
    A loss is NaN or +-inf. One event per run of consecutive non-finite losses.
``"divergence"``
    The smoothed training loss has stayed above ``divergence_factor`` times its best value
    for ``divergence_patience`` consecutive steps.
``"plateau"``
    The last ``plateau_window`` losses improved the best smoothed loss by less than
    ``plateau_min_improvement`` (relative).
``"overfitting"``
    The validation/train gap has grown over ``gap_window`` consecutive evaluations, the
    validation loss has not improved over them, and the gap exceeds ``gap_growth`` times
    the train loss.

Every detector fires once when its condition starts and re-arms only once the condition
has cleared, so a run that stays broken produces one event, not one per step. The
figures are plain Python floats: the module needs numpy only, not MLX, and costs a few
microseconds per step.
"""

import math
import operator
from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

#: The kinds of :class:`HealthEvent`.
KINDS = ("nan", "divergence", "plateau", "overfitting")


@dataclass(frozen=True)
class HealthEvent:
    """One detected condition of a training run.

    Attributes:
        step: The step at which the condition was detected (the ``step`` given to the
            observation that triggered it).
        kind: ``"nan"``, ``"divergence"``, ``"plateau"`` or ``"overfitting"``.
        message: One sentence with the figures, for a log or a console.
        value: The figure that triggered the event: the non-finite loss (``"nan"``), the
            smoothed loss (``"divergence"``), the relative improvement over the window
            (``"plateau"``) or the latest validation/train gap (``"overfitting"``).
    """

    step: int
    kind: str
    message: str
    value: float | None

    def as_record(self) -> dict[str, Any]:
        """A flat dict ``{"event", "step", "message", "value"}`` for one JSONL line.

        A non-finite ``value`` (the loss of a ``"nan"`` event) becomes ``None``, so the
        record is strict JSON; the message still names it.
        """
        value = self.value
        if value is not None and not math.isfinite(value):
            value = None
        return {"event": self.kind, "step": self.step, "message": self.message, "value": value}


def _as_float(value: Any, name: str) -> float:
    """``value`` as a float: Python numbers, numpy scalars and one-element arrays."""
    number = value
    shape = getattr(value, "shape", None)
    if shape is not None:  # numpy (or MLX, torch...) arrays and numpy scalars
        if math.prod(shape) != 1:
            raise TypeError(f"{name} must be a single number, got an array of shape {tuple(shape)}")
        item = getattr(value, "item", None)
        if callable(item):
            number = item()
    if number is None or isinstance(number, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        return float(number)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be a real number, got {type(value).__name__} {value!r}"
        ) from error


def _as_step(step: Any, previous: int | None, stream: str) -> int:
    """``step`` as an int, not before the previous step of the same stream."""
    if isinstance(step, (bool, np.bool_)):
        raise TypeError(f"step must be an integer, got {step!r}")
    try:
        step = operator.index(step)
    except TypeError as error:
        raise TypeError(f"step must be an integer, got {type(step).__name__} {step!r}") from error
    if previous is not None and step < previous:
        raise ValueError(
            f"step {step} comes before the previous {stream} step {previous}; "
            "steps must not decrease"
        )
    return step


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _check_int(name: str, value: Any, low: int) -> int:
    if not _is_real(value) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_real(name: str, value: Any, ok: Any, allowed: str) -> float:
    if not _is_real(value) or not math.isfinite(float(value)) or not ok(float(value)):
        raise ValueError(f"{name} must be a real number {allowed}, got {value!r}")
    return float(value)


def _g(x: float) -> str:
    return f"{x:.3g}"


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.3g}%"


class HealthWatch:
    """Watches a training run's losses for NaNs, divergence, plateaus and overfitting.

    Call [`observe_loss`][ncps_mlx.monitor.HealthWatch.observe_loss] with the training loss of every
    step (or every k-th step: windows count observations, not step numbers) and
    [`observe_validation`][ncps_mlx.monitor.HealthWatch.observe_validation] after every evaluation.
    Each returns the events it detected (usually none); `events` keeps all of them. Losses may be
    Python numbers, numpy scalars or one-element arrays (MLX arrays too); ``float()`` is taken of
    them.

    Training-loss detectors work on the exponentially smoothed loss
    ``s = smoothing * s + (1 - smoothing) * loss`` (started at the first finite loss) and
    its running minimum, the *best* smoothed loss. Non-finite losses are reported and
    otherwise skipped: they change neither the smoothed loss nor any window.

    * **nan** -- a NaN or +-inf loss gives an event at once; further non-finite losses
      give none until a finite loss has been seen. Training and validation losses are
      tracked separately.
    * **divergence** -- the smoothed loss is above ``divergence_factor`` x the best smoothed
      loss for ``divergence_patience`` consecutive finite losses: one event at the last of
      them. It re-arms when the smoothed loss comes back to or below that threshold. For a
      negative best (e.g. a log-likelihood) the threshold is
      ``best + (divergence_factor - 1) * |best|``; while the best is exactly 0 divergence
      is not checked.
    * **plateau** -- after the (``plateau_window`` + 1)-th finite loss, the relative
      improvement of the best smoothed loss over the last ``plateau_window`` losses,
      ``(best_then - best_now) / |best_then|``, is below ``plateau_min_improvement``: one
      event. It re-arms after a real improvement: the best smoothed loss falls below its
      value at the event by more than ``plateau_min_improvement`` (relative) and by more
      than three standard deviations of the smoothed loss's noise, so the lucky dips of a
      noisy loss do not make one plateau several. (The noise is the running mean, over
      about ``plateau_window`` losses, of the squared difference between each loss and
      the smoothed loss before it, times ``(1 - smoothing) / (1 + smoothing)``.) Not
      checked while the smoothed loss is above the divergence threshold: a diverging run
      gets a divergence event, not a plateau too.
    * **overfitting** -- at each evaluation the gap ``val_loss - train_loss`` is computed,
      ``train_loss`` defaulting to the mean of the finite training losses observed since
      the previous evaluation. One event when, together: the last ``gap_window`` gaps
      increase strictly, one after the other; none of the last ``gap_window - 1``
      validation losses improved on the best one (which was reached at the start of the
      window or earlier); and the latest gap exceeds ``gap_growth`` x ``|train_loss|``. It
      re-arms when the validation loss reaches a new best. An evaluation without a
      training loss (none given, none observed since the previous one) or with a
      non-finite loss breaks the run of gaps.

    Steps label the events; within each stream (training, validation) they must not
    decrease. An instance keeps only ``O(plateau_window + gap_window)`` numbers.

    Args:
        plateau_window: Number of losses over which improvement is measured (>= 1).
        plateau_min_improvement: Relative improvement below which the loss is on a
            plateau, in (0, 1).
        divergence_factor: Factor over the best smoothed loss that counts as diverging
            (> 1).
        divergence_patience: Consecutive losses above the threshold before the event
            (>= 1).
        gap_window: Consecutive evaluations over which the gap must grow (>= 2).
        gap_growth: Minimum latest gap, as a fraction of the train loss (>= 0).
        smoothing: Weight of the past in the smoothed loss, in [0, 1); 0 disables smoothing.

    Raises:
        ValueError: An argument is of the wrong type or outside its range.
    """

    def __init__(
        self,
        *,
        plateau_window: int = 200,
        plateau_min_improvement: float = 1e-3,
        divergence_factor: float = 10.0,
        divergence_patience: int = 3,
        gap_window: int = 5,
        gap_growth: float = 0.1,
        smoothing: float = 0.9,
    ) -> None:
        self.plateau_window = _check_int("plateau_window", plateau_window, 1)
        self.plateau_min_improvement = _check_real(
            "plateau_min_improvement", plateau_min_improvement, lambda v: 0 < v < 1, "in (0, 1)"
        )
        self.divergence_factor = _check_real(
            "divergence_factor", divergence_factor, lambda v: v > 1, "> 1"
        )
        self.divergence_patience = _check_int("divergence_patience", divergence_patience, 1)
        self.gap_window = _check_int("gap_window", gap_window, 2)
        self.gap_growth = _check_real("gap_growth", gap_growth, lambda v: v >= 0, ">= 0")
        self.smoothing = _check_real("smoothing", smoothing, lambda v: 0 <= v < 1, "in [0, 1)")

        #: Every event detected so far, in order.
        self.events: list[HealthEvent] = []

        # Training stream.
        self._step: int | None = None
        self._nan_run = False
        self._last_finite: tuple[int, float] | None = None
        self._smoothed: float | None = None
        self._best: float | None = None
        self._best_history: deque[float] = deque(maxlen=self.plateau_window + 1)
        self._above = 0
        self._divergence_armed = True
        self._plateau_armed = True
        self._plateau_best = 0.0  # the best smoothed loss at the last plateau event
        self._noise_var = 0.0  # running mean square of loss - smoothed loss
        self._noise_count = 0
        self._train_sum = 0.0
        self._train_count = 0

        # Validation stream.
        self._val_step: int | None = None
        self._val_nan_run = False
        self._best_val: float | None = None
        self._best_val_step: int | None = None
        self._since_best_val = 0
        self._gaps: deque[float] = deque(maxlen=self.gap_window)
        self._overfitting_armed = True

    def observe_loss(self, step: int, loss: float) -> list[HealthEvent]:
        """Observe the training loss of one step.

        Args:
            step: The training step (not less than the previous one).
            loss: The loss: a Python number, numpy scalar or one-element array.

        Returns:
            The events detected at this step (``"nan"``, ``"divergence"``, ``"plateau"``),
            usually none.

        Raises:
            TypeError: ``loss`` is not a real number or ``step`` not an integer.
            ValueError: ``step`` is less than the previous training step.
        """
        step = _as_step(step, self._step, "training")
        loss = _as_float(loss, "loss")
        self._step = step
        if not math.isfinite(loss):
            if self._nan_run:
                return []
            self._nan_run = True
            if self._last_finite is None:
                since = "no finite loss seen yet"
            else:
                since = (
                    f"last finite loss {_g(self._last_finite[1])} at step {self._last_finite[0]}"
                )
            return self._emit(HealthEvent(step, "nan", f"training loss is {loss} ({since})", loss))
        self._nan_run = False
        self._last_finite = (step, loss)
        self._train_sum += loss
        self._train_count += 1

        s = self.smoothing
        if self._smoothed is None:
            self._smoothed = loss
        else:
            square = (loss - self._smoothed) * (loss - self._smoothed)  # ** 2 may raise
            if math.isfinite(square):  # a blow-up to 1e200 must not poison the estimate
                self._noise_count += 1
                weight = 1 / min(self._noise_count, self.plateau_window)
                self._noise_var += weight * (square - self._noise_var)
            self._smoothed = s * self._smoothed + (1 - s) * loss
        self._best = self._smoothed if self._best is None else min(self._best, self._smoothed)
        self._best_history.append(self._best)

        event = self._check_divergence(step)
        if event is not None:
            return self._emit(event)
        if self._above:  # above the divergence threshold, not yet for long enough
            return []
        event = self._check_plateau(step)
        return [] if event is None else self._emit(event)

    def observe_validation(
        self, step: int, val_loss: float, train_loss: float | None = None
    ) -> list[HealthEvent]:
        """Observe the result of one evaluation.

        Args:
            step: The training step of the evaluation (not less than the previous one).
            val_loss: The validation loss.
            train_loss: The training loss to compare it with. Default: the mean of the
                finite training losses given to
                [`observe_loss`][ncps_mlx.monitor.HealthWatch.observe_loss] since the previous call
                of this method.

        Returns:
            The events detected (``"nan"`` for a non-finite validation loss,
            ``"overfitting"``), usually none.

        Raises:
            TypeError: A loss is not a real number or ``step`` not an integer.
            ValueError: ``step`` is less than the previous evaluation step.
        """
        step = _as_step(step, self._val_step, "validation")
        val = _as_float(val_loss, "val_loss")
        if train_loss is not None:
            train: float | None = _as_float(train_loss, "train_loss")
        elif self._train_count:
            train = self._train_sum / self._train_count
        else:
            train = None
        self._val_step = step
        self._train_sum, self._train_count = 0.0, 0

        if not math.isfinite(val):
            self._gaps.clear()
            if self._val_nan_run:
                return []
            self._val_nan_run = True
            return self._emit(HealthEvent(step, "nan", f"validation loss is {val}", val))
        self._val_nan_run = False

        if self._best_val is None or val < self._best_val:
            self._best_val, self._best_val_step = val, step
            self._since_best_val = 0
            self._overfitting_armed = True
        else:
            self._since_best_val += 1

        if train is None or not math.isfinite(train):
            self._gaps.clear()
            return []
        gap = val - train
        self._gaps.append(gap)
        if not (
            self._overfitting_armed
            and len(self._gaps) == self.gap_window
            and all(a < b for a, b in pairwise(self._gaps))
            and self._since_best_val >= self.gap_window - 1
            and gap > self.gap_growth * abs(train)
        ):
            return []
        self._overfitting_armed = False
        share = f"{_percent(gap / abs(train))} of it" if train else "the train loss being 0"
        message = (
            f"validation loss {_g(val)} is {_g(gap)} above the train loss {_g(train)} "
            f"({share}, threshold {_percent(self.gap_growth)}), the gap having grown over "
            f"{self.gap_window} evaluations while the validation loss stayed above its best "
            f"{_g(self._best_val)} of step {self._best_val_step}"
        )
        return self._emit(HealthEvent(step, "overfitting", message, gap))

    def _emit(self, event: HealthEvent) -> list[HealthEvent]:
        self.events.append(event)
        return [event]

    def _divergence_threshold(self) -> float | None:
        best = self._best
        if not best:  # None or exactly 0: nothing to measure a factor against
            return None
        return best + (self.divergence_factor - 1) * abs(best)

    def _check_divergence(self, step: int) -> HealthEvent | None:
        threshold = self._divergence_threshold()
        if threshold is None or self._smoothed <= threshold:
            self._above = 0
            self._divergence_armed = True
            return None
        self._above += 1
        if not self._divergence_armed or self._above < self.divergence_patience:
            return None
        self._divergence_armed = False
        best, smoothed, factor = self._best, self._smoothed, self.divergence_factor
        if best > 0:
            how = f"is {_g(smoothed / best)}x its best {_g(best)} (threshold {_g(factor)}x)"
        else:
            how = (
                f"is {_g(smoothed - best)} above its best {_g(best)} "
                f"(threshold {_g(factor - 1)}x |best|)"
            )
        message = f"smoothed loss {_g(smoothed)} {how} for {self._above} consecutive steps"
        return HealthEvent(step, "divergence", message, smoothed)

    def _check_plateau(self, step: int) -> HealthEvent | None:
        if not self._plateau_armed:
            s = self.smoothing
            noise = math.sqrt(self._noise_var * (1 - s) / (1 + s))
            margin = max(self.plateau_min_improvement * abs(self._plateau_best), 3 * noise)
            if self._best < self._plateau_best - margin:
                self._plateau_armed = True
        if not self._plateau_armed or len(self._best_history) <= self.plateau_window:
            return None
        then, now = self._best_history[0], self._best_history[-1]
        if then == now:
            improvement = 0.0
        elif then == 0:
            improvement = math.inf
        else:
            improvement = (then - now) / abs(then)
        if improvement >= self.plateau_min_improvement:
            return None
        self._plateau_armed, self._plateau_best = False, now
        message = (
            f"best smoothed loss {_g(now)} improved by {_percent(improvement)} over the last "
            f"{self.plateau_window} losses (threshold {_percent(self.plateau_min_improvement)})"
        )
        return HealthEvent(step, "plateau", message, improvement)
