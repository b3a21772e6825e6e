"""The memory estimate against MLX's measured peak, the budget check and the batch search."""

import gc
import sys

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ncps_mlx import LTC, CfC, NCPSError
from ncps_mlx.errors import MemoryBudgetError
from ncps_mlx.training import (
    MemoryEstimate,
    check_memory,
    default_memory_budget,
    estimate_memory,
    find_batch_size,
    make_predict,
    make_train_step,
)
from ncps_mlx.wirings import AutoNCP

# The estimate was calibrated to 0.72x-1.41x of the measured training peak (see the
# module docstring); the tests allow some slack for allocator noise.
LOW, HIGH = 0.7, 1.5


def measured_training_peak(model, batch_size, seq_len):
    """Peak bytes of compiled train steps, including parameters and optimizer state."""
    gc.collect()
    # MLX's buffer cache hands out cached buffers larger than asked for, which would make
    # the peak depend on what earlier tests left in it.
    mx.clear_cache()
    live = mx.get_active_memory() - sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    optimizer = optim.Adam(learning_rate=1e-3)
    optimizer.init(model.trainable_parameters())
    x = mx.random.normal((batch_size, seq_len, model.input_size))
    y_shape = (batch_size, seq_len) if model.return_sequences else (batch_size,)
    y = mx.random.normal(y_shape + (model.output_size,))
    mx.eval(x, y, optimizer.state)
    step = make_train_step(model, optimizer, nn.losses.mse_loss)
    peak = 0
    # The first step compiles; later steps can peak higher, so take the largest of three.
    for _ in range(3):
        mx.reset_peak_memory()
        step(x, y)
        peak = max(peak, mx.get_peak_memory() - live)
    return peak


def measured_inference_peak(model, batch_size, seq_len):
    gc.collect()
    mx.clear_cache()
    live = mx.get_active_memory() - sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    predict = make_predict(model)
    x = mx.random.normal((batch_size, seq_len, model.input_size))
    mx.eval(x)
    peak = 0
    for _ in range(2):
        mx.reset_peak_memory()
        mx.eval(predict(x))
        peak = max(peak, mx.get_peak_memory() - live)
    return peak


TRAINING_CASES = {
    "cfc": (lambda: CfC(16, 64), 32, 32),
    "cfc-mixed": (lambda: CfC(16, 64, mixed_memory=True), 8, 64),
    "wired-cfc": (lambda: CfC(16, AutoNCP(64, 8)), 64, 16),
    "wired-cfc-mixed": (lambda: CfC(16, AutoNCP(64, 8), mixed_memory=True), 16, 48),
    "ltc": (lambda: LTC(16, AutoNCP(32, 8)), 16, 16),
    "ltc-mixed": (lambda: LTC(16, AutoNCP(32, 8), mixed_memory=True), 8, 24),
    "cfc-last-output": (lambda: CfC(16, 64, return_sequences=False), 32, 24),
}


@pytest.mark.parametrize("case", TRAINING_CASES)
def test_estimate_tracks_the_measured_training_peak(case):
    make, batch_size, seq_len = TRAINING_CASES[case]
    model = make()
    mx.eval(model.parameters())
    estimate = estimate_memory(model, batch_size, seq_len)
    ratio = estimate.total / measured_training_peak(model, batch_size, seq_len)
    assert LOW <= ratio <= HIGH, f"{case}: estimate/measured = {ratio:.2f}"


@pytest.mark.parametrize(
    "make", [lambda: CfC(16, 64), lambda: LTC(16, AutoNCP(32, 8))], ids=["cfc", "ltc"]
)
def test_estimate_tracks_the_measured_inference_peak(make):
    model = make()
    mx.eval(model.parameters())
    estimate = estimate_memory(model, 32, 32, train=False)
    ratio = estimate.total / measured_inference_peak(model, 32, 32)
    assert LOW <= ratio <= HIGH, f"estimate/measured = {ratio:.2f}"
    assert estimate.gradients == estimate.optimizer_state == 0
    assert estimate.total < estimate_memory(model, 32, 32).total


def test_measured_and_estimated_peaks_grow_linearly_with_the_batch():
    model = CfC(16, AutoNCP(32, 4))
    mx.eval(model.parameters())
    peaks = [measured_training_peak(model, b, 16) for b in (16, 32, 64)]
    measured_steps = (peaks[1] - peaks[0], (peaks[2] - peaks[1]) / 2)
    assert measured_steps[1] == pytest.approx(measured_steps[0], rel=0.25)

    estimates = [estimate_memory(model, b, 16) for b in (16, 32, 64)]
    assert estimates[1].per_sample == pytest.approx(estimates[0].per_sample)
    assert estimates[2].total - estimates[1].total == pytest.approx(
        2 * (estimates[1].total - estimates[0].total), abs=8
    )
    assert estimates[0].fixed == pytest.approx(estimates[2].fixed, abs=8)
    per_sample_estimated = estimates[1].per_sample
    assert per_sample_estimated / (measured_steps[0] / 16) == pytest.approx(1.0, abs=0.5)


def test_memory_grows_linearly_with_the_sequence():
    model = CfC(16, 64)
    mx.eval(model.parameters())
    short, long = estimate_memory(model, 32, 32), estimate_memory(model, 32, 128)
    assert long.per_sample == pytest.approx(4 * short.per_sample)
    # The per-step weight gradients the backward pass sums at the end.
    assert short.fixed < long.fixed < 4 * short.fixed
    # Measured: nothing grows with seq_len ** 2 (slicing the per-step inputs out of the
    # sequence one by one made this about 10x).
    assert measured_training_peak(model, 32, 128) < 5 * measured_training_peak(model, 32, 32)


def test_estimate_fields_and_table():
    model = CfC(16, 64)
    estimate = estimate_memory(model, 8, 16, optimizer_slots=1)
    parameters = sum(v.nbytes for _, v in tree_flatten(model.trainable_parameters()))
    assert isinstance(estimate, MemoryEstimate)
    assert estimate.gradients == parameters
    assert estimate.optimizer_state == parameters
    assert estimate.inputs == 8 * 16 * (16 + 64) * 4
    assert estimate.total == sum(
        getattr(estimate, name)
        for name in (
            "parameters",
            "gradients",
            "optimizer_state",
            "inputs",
            "activations",
            "workspace",
        )
    )
    text = str(estimate)
    assert "batch 8 x 16 steps" in text and "MiB" in text and "total" in text
    with pytest.raises(AttributeError):
        estimate.total = 0  # frozen


def test_half_precision_halves_the_estimate():
    model = CfC(16, 64)
    full = estimate_memory(model, 32, 32).total
    model.set_dtype(mx.float16)
    assert estimate_memory(model, 32, 32).total == pytest.approx(full / 2, rel=0.01)


def test_check_memory_names_the_largest_batch_that_fits():
    model = CfC(16, AutoNCP(32, 4))
    estimate = estimate_memory(model, 256, 64)
    budget = estimate.total // 3
    with pytest.raises(MemoryBudgetError) as raised:
        check_memory(model, 256, 64, budget=budget)
    largest = estimate.largest_batch_size(budget)
    message = str(raised.value)
    assert f"largest batch_size that fits is {largest}" in message
    assert f"{estimate.total / 2**20:.2f} MiB" in message
    assert f"{budget / 2**20:.2f} MiB" in message
    assert "float16" in message and "shorten the sequences" in message
    assert 1 <= largest < 256
    assert check_memory(model, largest, 64, budget=budget).total <= budget
    with pytest.raises(MemoryBudgetError):
        check_memory(model, largest + 1, 64, budget=budget)


def test_check_memory_when_no_batch_fits():
    with pytest.raises(MemoryBudgetError, match="no batch_size fits"):
        check_memory(CfC(16, 64), 8, 64, budget=1024)
    assert issubclass(MemoryBudgetError, NCPSError)


def test_check_memory_default_budget_and_inference():
    model = CfC(16, 64)
    assert check_memory(model, 8, 16).total == estimate_memory(model, 8, 16).total
    assert not check_memory(model, 8, 16, budget=10**9, train=False).train


def test_find_batch_size_tries_only_what_fits_and_leaves_the_model_alone():
    model = CfC(16, AutoNCP(32, 4))
    before = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    candidates = (8, 16, 32, 64)
    budget = estimate_memory(model, 16, 8).total + 64
    search = find_batch_size(
        model, 8, loss_fn=nn.losses.mse_loss, budget=budget, candidates=candidates, steps=1
    )
    assert search.batch_size in (8, 16)
    assert [t.batch_size for t in search.trials] == list(candidates)
    assert [t.fits for t in search.trials] == [True, True, False, False]
    for trial in search.trials:
        assert trial.estimated_bytes == estimate_memory(model, trial.batch_size, 8).total
        if trial.fits:
            assert trial.samples_per_second > 0 and trial.peak_bytes > 0
        else:
            assert trial.samples_per_second is None and trial.peak_bytes is None
    for key, value in tree_flatten(model.parameters()):
        np.testing.assert_array_equal(np.array(value), before[key])
    assert "chosen: " in str(search) and "samples/s" in str(search)


def test_find_batch_size_with_timespans_time_major_and_an_optimizer_factory():
    model = LTC(8, AutoNCP(16, 2), batch_first=False, return_sequences=False)
    made = []

    def make_optimizer():
        made.append(optim.SGD(learning_rate=0.1, momentum=0.9))
        return made[-1]

    search = find_batch_size(
        model,
        6,
        loss_fn=nn.losses.mse_loss,
        make_optimizer=make_optimizer,
        budget=10**9,
        candidates=(4, 2),
        steps=1,
        timespans=True,
    )
    assert search.batch_size in (2, 4)
    assert [t.batch_size for t in search.trials] == [2, 4]
    assert len(made) == 3  # one to read its state size, then a fresh one per candidate


def test_find_batch_size_raises_when_nothing_fits():
    with pytest.raises(MemoryBudgetError, match="none of the batch sizes"):
        find_batch_size(CfC(16, 64), 32, loss_fn=nn.losses.mse_loss, budget=1024)


def test_default_budget_uses_host_memory_off_metal(monkeypatch):
    monkeypatch.setattr(mx.metal, "is_available", lambda: False)
    budget = default_memory_budget()
    assert isinstance(budget, int) and budget > 0
    assert default_memory_budget(0.5) < budget
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now fails
    assert default_memory_budget() > 0


def test_default_budget_on_metal_is_the_recommended_working_set(monkeypatch):
    monkeypatch.setattr(mx.metal, "is_available", lambda: True)
    info = {"max_recommended_working_set_size": 12 * 2**30, "memory_size": 16 * 2**30}
    monkeypatch.setattr(mx, "device_info", lambda: info, raising=False)
    assert default_memory_budget() == 12 * 2**30
    # Older MLX: only mx.metal.device_info.
    monkeypatch.delattr(mx, "device_info", raising=False)
    monkeypatch.setattr(mx.metal, "device_info", lambda: info, raising=False)
    assert default_memory_budget() == 12 * 2**30


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: estimate_memory(m, 0, 16), "'batch_size' must be an integer >= 1"),
        (lambda m: estimate_memory(m, 8, -1), "'seq_len' must be an integer >= 1"),
        (lambda m: estimate_memory(m, True, 16), "'batch_size'"),
        (lambda m: estimate_memory(m, 8, 16, optimizer_slots=-1), "'optimizer_slots'"),
        (lambda m: check_memory(m, 8, 16, budget=0), "'budget' must be a number of bytes"),
        (lambda m: check_memory(m, 8, 16, budget="1GB"), "'budget'"),
        (
            lambda m: find_batch_size(m, 16, loss_fn=nn.losses.mse_loss, candidates=()),
            "'candidates'",
        ),
        (
            lambda m: find_batch_size(m, 16, loss_fn=nn.losses.mse_loss, candidates=(8, 0)),
            "'candidates item' must be an integer >= 1",
        ),
        (lambda m: find_batch_size(m, 16, loss_fn=nn.losses.mse_loss, steps=0), "'steps'"),
        (lambda m: find_batch_size(m, 0, loss_fn=nn.losses.mse_loss), "'seq_len'"),
        (lambda m: default_memory_budget(1.5), "'fraction' must be in"),
    ],
)
def test_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(CfC(4, 8))
