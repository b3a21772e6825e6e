"""ncps_mlx.monitor.health: training-health events from synthetic loss streams."""

import json
import math

import numpy as np
import pytest

from ncps_mlx.monitor.health import HealthEvent, HealthWatch


def _feed(watch, losses, start=0):
    """Observe ``losses`` at steps start, start+1, ...; return the events."""
    events = []
    for step, loss in enumerate(losses, start):
        events += watch.observe_loss(step, loss)
    return events


def _kinds(events):
    return [event.kind for event in events]


def test_clean_exponential_decay_gives_no_events():
    watch = HealthWatch()
    for step in range(3000):
        watch.observe_loss(step, math.exp(-step / 300))
        if step % 100 == 99:  # validation a little above the training loss, gap shrinking
            watch.observe_validation(step, 1.2 * math.exp(-step / 300))
    assert watch.events == []


def test_flattening_loss_gives_one_plateau_event_at_the_right_step():
    watch = HealthWatch(plateau_window=20, smoothing=0.0)
    # Falls by 0.005 a step to 0.505 at step 99, then stays there until step 599.
    losses = [1 - 0.005 * t for t in range(100)] + [0.505] * 500
    events = _feed(watch, losses)
    # Up to step 118 the window (best at step t-20 against step t) still holds at least one
    # 0.005 drop, ~1% > 0.1%. At step 119 it spans steps 99..119, all 0.505: improvement 0.
    assert _kinds(events) == ["plateau"]
    assert events[0].step == 119
    assert events[0].value == 0.0
    assert "0%" in events[0].message and "0.1%" in events[0].message
    assert watch.events == events


def test_plateau_needs_a_full_window_and_rearms_after_a_real_improvement():
    watch = HealthWatch(plateau_window=20, smoothing=0.0)
    events = _feed(watch, [0.5] * 20)
    assert events == []  # 20 losses: one short of a window of 20 improvements
    events = _feed(watch, [0.5] * 80, start=20)
    assert [(e.kind, e.step) for e in events] == [("plateau", 20)]
    # A halving at step 100 re-arms; it leaves the window at step 120.
    events = _feed(watch, [0.25] * 200, start=100)
    assert [(e.kind, e.step) for e in events] == [("plateau", 120)]


def test_plateau_with_default_smoothing_fires_once_after_the_flattening():
    watch = HealthWatch(plateau_window=50)
    # Falls fast (about 5% a step) until step 99, then stays at its value of step 99.
    losses = [0.1 + math.exp(-t / 20) for t in range(100)] + [0.1 + math.exp(-99 / 20)] * 900
    events = _feed(watch, losses)
    assert _kinds(events) == ["plateau"]
    # The smoothed loss lags and creeps down after step 99: not before a full window later.
    assert 150 <= events[0].step < 250


def test_noisy_plateau_gives_one_event():
    # Without a noise margin, each new lucky dip of the smoothed loss would re-arm it.
    rng = np.random.default_rng(0)
    watch = HealthWatch()
    events = _feed(watch, 0.3 * rng.lognormal(0.0, 0.1, 10_000))
    assert _kinds(events) == ["plateau"]
    assert events[0].step < 1000


def test_blow_up_gives_one_divergence_event_after_patience():
    watch = HealthWatch(divergence_patience=3)
    # Constant 1.0: smoothed = best = 1.0. From step 50 the loss is 50, so the smoothed loss
    # at step 49 + j is 50 - 49 * 0.9**j: 5.9 at step 50, 10.31 > 10 from step 51 on.
    # Above the threshold at steps 51, 52, 53: the event is at step 53.
    events = _feed(watch, [1.0] * 50 + [50.0] * 100)
    assert _kinds(events) == ["divergence"]
    event = events[0]
    assert event.step == 53
    assert event.value == pytest.approx(50 - 49 * 0.9**4)
    assert "its best 1 (threshold 10x)" in event.message


def test_divergence_rearms_only_below_the_threshold():
    watch = HealthWatch(smoothing=0.0, divergence_patience=4, plateau_window=1000)
    losses = [math.exp(-t / 20) for t in range(50)]  # best: exp(-49/20) = 0.086
    losses += [100.0] * 10  # above from step 50: event at step 53
    losses += [5.0] * 10  # 58x the best, still above: no new event
    losses += [0.05] * 10  # back below: re-armed (and a new best)
    losses += [1e3] * 10  # steps 80..: a new event at step 83
    events = _feed(watch, losses)
    assert [(e.kind, e.step) for e in events] == [("divergence", 53), ("divergence", 83)]


def test_huge_finite_losses_are_handled():
    watch = HealthWatch(plateau_window=10)
    events = _feed(watch, [1.0] * 5 + [1e200, 1e300, 1e308, 1e308] + [1.0] * 200)
    # 1e200 lifts the smoothed loss to 1e199 (above 10x from step 5), no OverflowError.
    assert [(e.kind, e.step) for e in events] == [("divergence", 7)]


def test_isolated_spike_is_not_a_divergence():
    watch = HealthWatch()
    losses = [1.0] * 100
    losses[50] = 100.0  # smoothed 10.9 for one step, then 9.9: below patience 3
    assert _feed(watch, losses) == []


def test_divergence_with_a_negative_loss():
    watch = HealthWatch(smoothing=0.0, plateau_window=1000)
    # best -2: threshold -2 + 9 * 2 = 16
    events = _feed(watch, [-2.0] * 10 + [15.0] * 10 + [17.0] * 10)
    assert [(e.kind, e.step) for e in events] == [("divergence", 22)]


def test_nan_gives_one_event_per_run_of_non_finite_losses():
    watch = HealthWatch(plateau_window=1000)
    losses = [1.0, math.nan, math.nan, math.inf, 0.9, -math.inf, 0.8, np.float32("nan")]
    events = _feed(watch, losses)
    assert [(e.kind, e.step) for e in events] == [("nan", 1), ("nan", 5), ("nan", 7)]
    assert math.isnan(events[0].value) and events[1].value == -math.inf
    assert "last finite loss 1 at step 0" in events[0].message
    # The non-finite losses left the smoothed loss alone: no divergence afterwards.
    assert _feed(watch, [0.8] * 20, start=8) == []


def test_nan_validation_loss():
    watch = HealthWatch()
    events = []
    for step, val in enumerate([1.0, math.nan, math.nan, 0.9, math.inf]):
        events += watch.observe_validation(step, val, train_loss=0.5)
    assert [(e.kind, e.step) for e in events] == [("nan", 1), ("nan", 4)]
    assert "validation" in events[0].message


def _overfitting_curve(k):
    """Validation k (0, 1, ...): train falls as 0.9**k; validation tracks it 0.05 above
    until k = 5, then rises by 0.02 per evaluation."""
    train = 0.9**k
    val = train + 0.05 if k <= 5 else 0.9**5 + 0.05 + 0.02 * (k - 5)
    return train, val


@pytest.mark.parametrize(
    ("gap_growth", "expected_k"),
    [
        # Gaps are 0.05 up to k = 5, then grow: 5 strictly growing gaps end at k = 9, whose
        # validation loss is the 4th without improving on k = 5. Gap 0.333 > 0.1 * 0.387.
        (0.1, 9),
        # At k = 9 the gap 0.333 is below 1.0 * 0.387; at k = 10, 0.392 > 0.349.
        (1.0, 10),
    ],
)
def test_overfitting_gives_one_event_and_not_before(gap_growth, expected_k):
    watch = HealthWatch(gap_window=5, gap_growth=gap_growth)
    for k in range(20):
        train, val = _overfitting_curve(k)
        events = watch.observe_validation(100 * (k + 1), val, train_loss=train)
        if k == expected_k:
            assert _kinds(events) == ["overfitting"]
            assert events[0].step == 100 * (k + 1)
            assert events[0].value == pytest.approx(val - train)
        else:
            assert events == [], k
    assert _kinds(watch.events) == ["overfitting"]
    assert "best 0.64 of step 600" in watch.events[0].message


def test_overfitting_uses_the_mean_training_loss_since_the_previous_validation():
    watch = HealthWatch(gap_window=5)
    step = 0
    found = []
    for k in range(20):
        train, val = _overfitting_curve(k)
        losses = [train] * 10
        if k == 7:
            losses[3] = math.nan  # reported, and left out of the mean
        for loss in losses:
            found += watch.observe_loss(step, loss)
            step += 1
        found += watch.observe_validation(step - 1, val)
    assert [(e.kind, e.step) for e in found] == [("nan", 73), ("overfitting", 99)]


def test_overfitting_rearms_when_validation_improves_and_needs_a_training_loss():
    watch = HealthWatch(gap_window=3, gap_growth=0.0)
    # Steps 0..2: gaps 0.5 < 0.6 < 0.7, and validation has not improved on step 0 for the
    # 2 evaluations a window of 3 needs: event at step 2 (none at steps 3, 4). The new best
    # at step 5 re-arms; gaps 0.4 < 0.5 < 0.6 at steps 5..7: event at step 7.
    vals = [1.0, 1.1, 1.2, 1.3, 1.4, 0.9, 1.0, 1.1, 1.2]
    events = []
    for step, val in enumerate(vals):
        events += watch.observe_validation(step, val, train_loss=0.5)
    assert [(e.kind, e.step) for e in events] == [("overfitting", 2), ("overfitting", 7)]

    watch = HealthWatch(gap_window=2, gap_growth=0.0)
    for step, val in enumerate([1.0, 1.1, 1.2, 1.3]):  # no training loss: no gap
        assert watch.observe_validation(step, val) == []


def test_noisy_decay_gives_no_divergence():
    rng = np.random.default_rng(0)
    steps = np.arange(5000)
    losses = (0.05 + np.exp(-steps / 500)) * rng.lognormal(0.0, 0.5, steps.size)
    watch = HealthWatch()
    events = _feed(watch, losses)
    assert "divergence" not in _kinds(events)
    assert "nan" not in _kinds(events)


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("plateau_window", 0, ">= 1"),
        ("plateau_window", 1.5, ">= 1"),
        ("plateau_window", True, ">= 1"),
        ("plateau_window", "200", ">= 1"),
        ("plateau_min_improvement", 0.0, "in (0, 1)"),
        ("plateau_min_improvement", 1.0, "in (0, 1)"),
        ("plateau_min_improvement", math.nan, "in (0, 1)"),
        ("divergence_factor", 1.0, "> 1"),
        ("divergence_factor", math.inf, "> 1"),
        ("divergence_factor", None, "> 1"),
        ("divergence_patience", 0, ">= 1"),
        ("gap_window", 1, ">= 2"),
        ("gap_growth", -0.1, ">= 0"),
        ("smoothing", 1.0, "in [0, 1)"),
        ("smoothing", -0.5, "in [0, 1)"),
    ],
)
def test_arguments_are_validated(name, value, allowed):
    with pytest.raises(ValueError) as info:
        HealthWatch(**{name: value})
    message = str(info.value)
    assert name in message and repr(value) in message and allowed in message


def test_numpy_integers_and_floats_are_valid_arguments():
    watch = HealthWatch(plateau_window=np.int64(10), gap_growth=0, smoothing=np.float32(0.5))
    assert watch.plateau_window == 10 and type(watch.plateau_window) is int


@pytest.mark.parametrize(
    "loss", [0.5, 1, np.float32(0.5), np.float64(0.5), np.array(0.5), np.array([0.5])]
)
def test_loss_types_accepted(loss):
    watch = HealthWatch()
    assert watch.observe_loss(0, loss) == []
    assert watch.observe_validation(0, loss, train_loss=loss) == []


def test_mlx_scalar_loss_is_accepted():
    mx = pytest.importorskip("mlx.core")
    watch = HealthWatch(smoothing=0.0, divergence_patience=1)
    watch.observe_loss(0, mx.array(1.0))
    assert _kinds(watch.observe_loss(1, mx.array(20.0))) == ["divergence"]


@pytest.mark.parametrize("loss", ["0.5", None, [0.5], np.array([0.5, 0.4]), 1 + 2j, True])
def test_non_numeric_losses_raise_type_error(loss):
    watch = HealthWatch()
    with pytest.raises(TypeError, match="loss"):
        watch.observe_loss(0, loss)
    with pytest.raises(TypeError, match="val_loss"):
        watch.observe_validation(0, loss)
    if loss is not None:  # None is the default: the mean training loss
        with pytest.raises(TypeError, match="train_loss"):
            watch.observe_validation(0, 1.0, train_loss=loss)
    assert watch.events == []


def test_steps_must_be_non_decreasing_integers():
    watch = HealthWatch()
    watch.observe_loss(np.int64(5), 1.0)
    watch.observe_loss(5, 1.0)
    with pytest.raises(ValueError, match="step 4 comes before the previous training step 5"):
        watch.observe_loss(4, 1.0)
    with pytest.raises(TypeError, match="step"):
        watch.observe_loss(6.0, 1.0)
    watch.observe_validation(10, 1.0)
    with pytest.raises(ValueError, match="validation step 10"):
        watch.observe_validation(9, 1.0)


def test_as_record_round_trips_through_json():
    watch = HealthWatch(smoothing=0.0, divergence_patience=1)
    _feed(watch, [1.0, math.nan, 50.0])
    assert _kinds(watch.events) == ["nan", "divergence"]
    for event in watch.events:
        record = event.as_record()
        assert set(record) == {"event", "step", "message", "value"}
        assert record["event"] == event.kind and record["step"] == event.step
        assert json.loads(json.dumps(record, allow_nan=False)) == record
    assert watch.events[0].as_record()["value"] is None  # NaN is not JSON
    assert watch.events[1].as_record()["value"] == 50.0


def test_event_is_frozen():
    event = HealthEvent(3, "plateau", "flat", 0.0)
    with pytest.raises(AttributeError):
        event.step = 4
