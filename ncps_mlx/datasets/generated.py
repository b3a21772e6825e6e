"""Built-in tasks generated on the fly (nothing is downloaded).

Every generator is deterministic given ``seed``, returns float32 arrays in a
[`SequenceData`][ncps_mlx.datasets.SequenceData] and checks its arguments, raising ``ValueError``.
"""

import numpy as np

from ._base import SequenceData


def _require(owner: str, ok: bool, need: str, got: object) -> None:
    """Raise the package's ``[owner] need ..., got ...`` error unless ``ok``."""
    if not ok:
        raise ValueError(f"[{owner}] need {need}, got {got}")


def _check_size(owner: str, num_sequences: int, seq_len: int) -> None:
    _require(
        owner,
        num_sequences >= 1 and seq_len >= 2,
        "num_sequences >= 1 and seq_len >= 2",
        f"{num_sequences}, {seq_len}",
    )


def sine_waves(num_sequences: int = 16, seq_len: int = 48, *, seed: int = 0) -> SequenceData:
    """A periodic mapping task: from ``(sin t, cos t)`` predict ``sin 2t``.

    Each sequence starts at a random phase, so the model must learn the frequency
    doubling rather than memorise one curve.

    Args:
        num_sequences: Number of sequences N.
        seq_len: Steps per sequence T (at least 2).
        seed: Seed of the random phases.

    Returns:
        ``x`` (N, T, 2) and per-step targets ``y`` (N, T, 1), float32; steps are evenly
        spaced, so ``timespans`` is ``None``.
    """
    _check_size("sine_waves", num_sequences, seq_len)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=(num_sequences, 1))
    t = phase + np.linspace(0, 3 * np.pi, seq_len)[None, :]
    x = np.stack([np.sin(t), np.cos(t)], axis=-1)
    y = np.sin(2 * t)[..., None]
    return SequenceData(x.astype(np.float32), y.astype(np.float32))


def _damped_oscillation(t: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """``A exp(-d t) sin(w t + phi)`` with one row of parameters per sequence."""
    return (
        params["amplitude"]
        * np.exp(-params["decay"] * t)
        * np.sin(params["frequency"] * t + params["phase"])
    )


def irregular_oscillator(
    num_sequences: int = 64,
    seq_len: int = 64,
    *,
    seed: int = 0,
    horizon: float = 0.5,
    noise: float = 0.1,
    mean_gap: float = 0.3,
) -> SequenceData:
    """Noisy, irregularly sampled damped oscillations; predict the clean signal ahead.

    Sequence ``n`` follows ``s(t) = A exp(-d t) sin(w t + phi)`` from ``t = 0``, with
    ``A ~ U(0.5, 1.5)``, ``d ~ U(0, 0.1)``, ``w ~ U(1.5, 3)`` (radians per unit time, so a
    period of 2.1 to 4.2 time units) and ``phi ~ U(0, 2 pi)`` drawn per sequence. It is
    observed at times ``t_i = timespans[n, 0] + ... + timespans[n, i]``; the gaps are
    ``mean_gap * (0.1 + 0.9 * E)`` with ``E ~ Exponential(1)``: on average ``mean_gap``,
    never shorter than a tenth of it, and often several times longer.

    - ``x[n, i, 0] = s(t_i) + noise * N(0, 1)``, the observation;
    - ``y[n, i, 0] = s(t_i + horizon)``, the noiseless signal ``horizon`` time units
      after the current sample (``horizon=0`` makes it a denoising task).

    The gaps vary by an order of magnitude while a default gap turns the phase by about
    0.7 radians, so how far the oscillation moved between two samples, and where it will
    be ``horizon`` later, depends on the elapsed times: a model fed ``timespans`` can
    track frequency and phase, one that ignores them sees the same values at unknown times
    and can only guess. The noise means the current sample alone is not the answer even at
    ``horizon=0``.

    Args:
        num_sequences: Number of sequences N.
        seq_len: Samples per sequence T (at least 2).
        seed: Seed of every random draw; the parameters and sample times do not depend on
            ``horizon`` or ``noise``, so changing only those keeps the same curves.
        horizon: How far ahead (in time units, >= 0) the target looks.
        noise: Standard deviation (>= 0) of the Gaussian observation noise.
        mean_gap: Mean time (> 0) between samples.

    Returns:
        ``x`` (N, T, 1), per-step targets ``y`` (N, T, 1) and ``timespans`` (N, T), all
        float32, with every timespan > 0.
    """
    owner = "irregular_oscillator"
    _check_size(owner, num_sequences, seq_len)
    _require(owner, horizon >= 0, "horizon >= 0", horizon)
    _require(owner, noise >= 0, "noise >= 0", noise)
    _require(owner, mean_gap > 0, "mean_gap > 0", mean_gap)
    rng = np.random.default_rng(seed)
    column = (num_sequences, 1)
    params = {
        "amplitude": rng.uniform(0.5, 1.5, size=column),
        "decay": rng.uniform(0.0, 0.1, size=column),
        "frequency": rng.uniform(1.5, 3.0, size=column),
        "phase": rng.uniform(0, 2 * np.pi, size=column),
    }
    gaps = mean_gap * (0.1 + 0.9 * rng.exponential(size=(num_sequences, seq_len)))
    # Round the gaps to float32 before summing them, so the returned timespans add up to
    # exactly the times the signal was evaluated at (up to float64 summation).
    gaps = gaps.astype(np.float32)
    t = np.cumsum(gaps.astype(np.float64), axis=1)
    # Drawn last and always, so `noise` only scales it and leaves every other draw alone.
    jitter = rng.standard_normal(size=t.shape)
    x = _damped_oscillation(t, params) + noise * jitter
    y = _damped_oscillation(t + horizon, params)
    return SequenceData(
        x[..., None].astype(np.float32), y[..., None].astype(np.float32), timespans=gaps
    )


def _piecewise_constant(
    rng: np.random.Generator, shape: tuple[int, int], low: float, high: float, hold: float
) -> np.ndarray:
    """Levels from ``U(low, high)`` that switch with probability ``1 / hold`` each step."""
    switches = rng.random(shape) < 1.0 / hold
    switches[:, 0] = False
    segment = np.cumsum(switches, axis=1)
    levels = rng.uniform(low, high, size=shape)
    return np.take_along_axis(levels, segment, axis=1)


def spring_mass_control(
    num_sequences: int = 32,
    seq_len: int = 200,
    *,
    seed: int = 0,
    dt: float = 0.05,
    kp: float = 4.0,
    ki: float = 1.0,
    kd: float = 2.0,
    u_max: float = 5.0,
    noise: float = 0.0,
    hold: float = 60.0,
) -> SequenceData:
    """Imitate a PID controller steering a mass-spring-damper to a moving reference.

    The plant is ``p'' = (u - k p - c p') / m`` with ``m = 1`` and, per sequence,
    stiffness ``k ~ U(0.5, 2)`` and damping ``c ~ U(0.1, 0.5)``; it starts at
    ``p ~ U(-1, 1)`` and ``p' ~ N(0, 0.5^2)``. The reference ``r`` is piecewise constant:
    levels from ``U(-1, 1)`` that switch with probability ``1 / hold`` at each step.

    At step ``i`` the controller measures ``(p_i, v_i)`` (the state plus ``noise * N(0, 1)``
    on each) and applies, held constant for the next ``dt``:

    ```text
    e_i = r_i - p_i
    u_i = clip(kp * e_i + ki * dt * (e_0 + ... + e_i) - kd * v_i, -u_max, u_max)
    ```

    The integral term removes the offset the spring leaves under pure PD control, and it
    makes the action depend on the whole error history: a model has to integrate, so it
    needs memory (and ``dt``), as in the imitation-learning tasks of the NCP papers.
    Between steps the plant is integrated with one semi-implicit Euler step of ``dt``.

    - ``x[n, i] = (p_i, v_i, r_i)``, what the controller measured;
    - ``y[n, i, 0] = u_i``, its action.

    Args:
        num_sequences: Number of sequences N.
        seq_len: Steps per sequence T (at least 2).
        seed: Seed of every random draw.
        dt: Control and integration step (> 0), also returned as ``timespans``.
        kp: Proportional gain.
        ki: Integral gain.
        kd: Derivative gain (on the measured velocity, so reference steps do not kick).
        u_max: Actuator limit (> 0).
        noise: Standard deviation (>= 0) of the measurement noise.
        hold: Mean number of steps (>= 1) between reference switches.

    Returns:
        ``x`` (N, T, 3), per-step targets ``y`` (N, T, 1) and ``timespans`` (N, T) equal
        to ``dt``, all float32.
    """
    owner = "spring_mass_control"
    _check_size(owner, num_sequences, seq_len)
    _require(owner, dt > 0, "dt > 0", dt)
    _require(owner, u_max > 0, "u_max > 0", u_max)
    _require(owner, noise >= 0, "noise >= 0", noise)
    _require(owner, hold >= 1, "hold >= 1", hold)
    rng = np.random.default_rng(seed)
    n = num_sequences
    stiffness = rng.uniform(0.5, 2.0, size=n)
    damping = rng.uniform(0.1, 0.5, size=n)
    position = rng.uniform(-1.0, 1.0, size=n)
    velocity = rng.normal(0.0, 0.5, size=n)
    reference = _piecewise_constant(rng, (n, seq_len), -1.0, 1.0, hold)
    jitter = noise * rng.standard_normal(size=(n, seq_len, 2))

    observations = np.empty((n, seq_len, 3))
    actions = np.empty((n, seq_len))
    integral = np.zeros(n)
    for i in range(seq_len):
        measured_p = position + jitter[:, i, 0]
        measured_v = velocity + jitter[:, i, 1]
        error = reference[:, i] - measured_p
        integral += error * dt
        u = np.clip(kp * error + ki * integral - kd * measured_v, -u_max, u_max)
        observations[:, i] = np.stack([measured_p, measured_v, reference[:, i]], axis=-1)
        actions[:, i] = u
        # Semi-implicit Euler: the new velocity moves the position, which keeps the
        # undamped oscillator from gaining energy the way explicit Euler does.
        velocity = velocity + dt * (u - stiffness * position - damping * velocity)
        position = position + dt * velocity
    timespans = np.full((n, seq_len), dt, dtype=np.float32)
    return SequenceData(
        observations.astype(np.float32),
        actions[..., None].astype(np.float32),
        timespans=timespans,
    )


def _draw_bit_streams(
    rng: np.random.RandomState, num_sequences: int, longest: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence a length in [2, longest] and that many random bits, drawn one
    sequence after the other as the CfC code's ``XORData`` draws them."""
    lengths = np.empty(num_sequences, dtype=np.int64)
    bits = np.zeros((num_sequences, longest), dtype=np.int64)
    for n in range(num_sequences):
        lengths[n] = rng.randint(low=2, high=longest + 1)
        bits[n, : lengths[n]] = rng.randint(low=0, high=2, size=lengths[n])
    return lengths, bits


def _runs_as_events(
    lengths: np.ndarray, bits: np.ndarray, seq_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each bit stream as events: one where the bit changes (its value, and the bits since
    the last event), and one at the end when the last run is longer than one bit."""
    n, longest = bits.shape
    column = np.arange(longest)[None, :]
    real = column < lengths[:, None]
    changes = np.concatenate([np.ones((n, 1), bool), bits[:, 1:] != bits[:, :-1]], axis=1)
    is_event = changes & real
    latest = np.maximum.accumulate(np.where(is_event, column, -1), axis=1)
    before = np.concatenate([np.full((n, 1), -1), latest[:, :-1]], axis=1)
    slot = np.cumsum(is_event, axis=1) - 1
    events = np.zeros((n, seq_len), np.float32)
    elapsed = np.zeros((n, seq_len), np.float32)
    rows = np.nonzero(is_event)[0]
    events[rows, slot[is_event]] = bits[is_event]
    elapsed[rows, slot[is_event]] = (column - before)[is_event]
    last = lengths - 1
    everyone = np.arange(n)
    last_event = latest[everyone, last]
    tail = np.nonzero(last_event < last)[0]
    count = is_event.sum(axis=1)
    events[tail, count[tail]] = bits[tail, last[tail]]
    elapsed[tail, count[tail]] = (last - last_event)[tail]
    mask = np.arange(seq_len)[None, :] < (count + (last_event < last))[:, None]
    return events, elapsed, mask


def bit_stream_xor(num_sequences: int = 1024, seq_len: int = 32, *, seed: int = 0) -> SequenceData:
    """The bit-stream XOR task of the CfC paper: the parity of a random bit stream, read
    as events at irregular times.

    A stream of 2 to ``seq_len - 1`` random bits is sent as events: one at each change of
    the bit (its new value, and the bits since the previous event as the elapsed time)
    and one at the end if the last run is longer than one bit. A run's length is only in
    the times, so the parity, whether the stream holds an odd number of ones, needs a
    model that integrates the ``timespans`` (Hasani et al. 2022, "Closed-form
    continuous-time neural networks", Nature Machine Intelligence).

    The draws follow ``XORData(event_based=True, pad_size=seq_len)`` of the paper's code
    (github.com/raminmh/CfC, ``irregular_sampled_datasets.py``) with numpy's legacy
    ``RandomState(seed)``: ``seed=1234984`` and 100,000 sequences give its training set,
    and its elapsed times divided by ``seq_len`` are the ``timespans`` here.

    Args:
        num_sequences: Number of sequences N.
        seq_len: Padded length T (at least 3), the paper's 32.
        seed: Seed of numpy's ``RandomState``.

    Returns:
        ``x`` (N, T, 1) the event values 0 or 1, ``y`` (N, 1) the parity as float 0 or 1
        (for one logit and ``binary_cross_entropy``), ``timespans`` (N, T) and ``mask``
        (N, T), ``False`` on the padding at the end.
    """
    owner = "bit_stream_xor"
    _require(
        owner,
        num_sequences >= 1 and seq_len >= 3,
        "num_sequences >= 1 and seq_len >= 3",
        f"{num_sequences}, {seq_len}",
    )
    # The paper's generator draws with the legacy RandomState: the same seed gives its data.
    lengths, bits = _draw_bit_streams(np.random.RandomState(seed), num_sequences, seq_len - 1)
    events, elapsed, mask = _runs_as_events(lengths, bits, seq_len)
    parity = (bits.sum(axis=1) % 2).astype(np.float32)
    return SequenceData(events[..., None], parity[:, None], timespans=elapsed / seq_len, mask=mask)
