"""The measured memory estimate against MLX's peak, the budget check and the batch search."""

import copy
import gc
import re
import sys

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ncps_mlx import LTC, RNN, CfC, NCPSError
from ncps_mlx.cells import Cell
from ncps_mlx.errors import MemoryBudgetError
from ncps_mlx.training import (
    MemoryEstimate,
    check_memory,
    default_memory_budget,
    estimate_memory,
    find_batch_size,
    fit,
    make_predict,
    make_train_step,
)
from ncps_mlx.training.losses import LOSSES
from ncps_mlx.wirings import AutoNCP

MIB = 2**20
# Estimate / direct measurement: both are peaks of steps, which vary by a few percent from
# call to call at the few MiB of these models.
TOLERANCE = 0.1


def measured_peak(model, batch_size, seq_len, *, train=True, calls=5):
    """Peak bytes of compiled calls on ``model`` as a user sees them: MLX's peak above
    what was live before, the parameters included, the largest of ``calls``."""
    gc.collect()
    # A cached buffer handed out for a smaller request is counted whole: without this the
    # peak would depend on what earlier tests left in the cache.
    mx.clear_cache()
    live = mx.get_active_memory() - sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    x = mx.random.normal((batch_size, seq_len, model.input_size))
    if train:
        optimizer = optim.Adam(learning_rate=1e-3)
        optimizer.init(model.trainable_parameters())
        y_shape = (batch_size, seq_len) if model.return_sequences else (batch_size,)
        y = mx.random.normal(y_shape + (model.output_size,))
        mx.eval(x, y, optimizer.state)
        step = make_train_step(model, optimizer, LOSSES["mse"])

        def call():
            step(x, y)

    else:
        predict = make_predict(model)
        mx.eval(x)

        def call():
            mx.eval(predict(x))

    peak = 0
    gc.disable()  # a collection during a call could free arrays counted in `live`
    try:
        for _ in range(calls):
            mx.reset_peak_memory()
            call()
            peak = max(peak, mx.get_peak_memory() - live)
    finally:
        gc.enable()
    return peak


class LeakyCell(Cell):
    """A cell ncps_mlx knows nothing about: ``h' = (h + tanh(x W + h U)) / 2``."""

    def __init__(self, input_size: int, units: int):
        super().__init__()
        self.n_in, self.n_units = input_size, units
        self.w = 0.3 * mx.random.normal((input_size, units))
        self.u = 0.3 * mx.random.normal((units, units))

    @property
    def input_size(self):
        return self.n_in

    @property
    def state_size(self):
        return self.n_units

    @property
    def output_size(self):
        return self.n_units

    def derive(self):
        return {}

    def project(self, consts, x):
        return x

    def step(self, consts, inputs, h, dt):
        h = 0.5 * (h + mx.tanh(inputs @ self.w + h @ self.u))
        return h, h


def leaky_model():
    return RNN(LeakyCell(4, 24))


@pytest.mark.parametrize("train", [True, False], ids=["train", "inference"])
@pytest.mark.parametrize(
    "make",
    [lambda: CfC(16, AutoNCP(32, 4)), lambda: LTC(16, AutoNCP(32, 8))],
    ids=["cfc", "ltc"],
)
def test_the_estimate_at_the_batch_size_asked_is_its_measured_peak(make, train):
    model = make()
    mx.eval(model.parameters())
    estimate = estimate_memory(model, 64, 16, train=train, budget=2**40)
    assert [b for b, _ in estimate.measured] == [4, 16, 64]
    assert not estimate.extrapolated
    assert estimate.total == pytest.approx(estimate.measured[-1][1], abs=1)
    assert estimate.total / measured_peak(model, 64, 16, train=train) == pytest.approx(
        1, abs=TOLERANCE
    )


@pytest.mark.parametrize("share, last_rungs", [(0.9, 1), (1.2, 2)], ids=["stop", "one-more"])
def test_an_extrapolated_estimate_against_a_direct_measurement(share, last_rungs):
    model = LTC(16, AutoNCP(32, 8))
    mx.eval(model.parameters())
    peak = measured_peak(model, 256, 16)
    # Half the budget holds batch 64 but not 256, so the ladder (4, 16, 64, 256) stops at
    # 64, or, with room for at least 128 (twice 64), measures the largest batch that fits
    # half the budget; the estimate at 256 is read off the line through the last two.
    estimate = estimate_memory(model, 256, 16, budget=int(share * peak))
    sizes = [b for b, _ in estimate.measured]
    assert sizes[:3] == [4, 16, 64] and len(sizes) == 2 + last_rungs
    assert estimate.extrapolated and 64 <= sizes[-1] < 256
    assert estimate.total / peak == pytest.approx(1, abs=TOLERANCE)
    assert estimate.bytes_at(sizes[-1]) == pytest.approx(estimate.measured[-1][1], abs=1)


def test_a_user_defined_cell_is_measured_and_trains():
    model = leaky_model()
    mx.eval(model.parameters())
    for train in (True, False):
        estimate = estimate_memory(model, 64, 32, train=train)
        ratio = estimate.total / measured_peak(model, 64, 32, train=train)
        assert ratio == pytest.approx(1, abs=TOLERANCE)
    x = np.random.default_rng(0).standard_normal((8, 12, 4)).astype(np.float32)
    history = fit(model, (x, np.tanh(x[..., :1]).repeat(24, -1)), epochs=1, progress=False)
    assert np.isfinite(history["loss"][0])


def test_the_callers_model_optimizer_and_random_state_are_left_alone():
    # Dropout: a training step on the copy draws from MLX's random key.
    model = CfC(8, 16, backbone_dropout=0.5)
    optimizer = optim.Adam(learning_rate=1e-2)
    step = make_train_step(model, optimizer, LOSSES["mse"])
    step(mx.ones((2, 5, 8)), mx.zeros((2, 5, 16)))  # the optimizer now has state
    model.eval()
    mx.random.seed(7)
    key = np.array(mx.random.state[0])
    params = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    state = {k: np.array(v) for k, v in tree_flatten(optimizer.state)}
    frozen = copy.copy(optimizer.state)
    for train in (True, False):
        estimate_memory(model, 8, 6, train=train, optimizer=optimizer, timespans=True, mask=True)
    assert not model.training
    np.testing.assert_array_equal(np.array(mx.random.state[0]), key)
    for k, v in tree_flatten(model.parameters()):
        np.testing.assert_array_equal(np.array(v), params[k])
    assert optimizer.state.keys() == frozen.keys()
    for k, v in tree_flatten(optimizer.state):
        np.testing.assert_array_equal(np.array(v), state[k])


def test_estimate_fields_and_table():
    model = CfC(16, 64)
    parameters = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    estimate = estimate_memory(model, 8, 16, optimizer=optim.SGD(0.1, momentum=0.9))
    assert isinstance(estimate, MemoryEstimate)
    assert (estimate.batch_size, estimate.seq_len, estimate.train) == (8, 16, True)
    assert estimate.parameters == estimate.gradients == parameters
    # SGD with momentum keeps one array per parameter, and its step and learning rate.
    assert 0 <= estimate.optimizer_state - parameters <= 16
    assert estimate.total == pytest.approx(estimate.fixed + 8 * estimate.per_sample, abs=1)
    assert estimate.fixed > estimate.parameters + estimate.gradients + estimate.optimizer_state
    # At least the batch itself: inputs and targets of one sequence.
    assert estimate.per_sample >= 16 * (16 + 64) * 4
    text = str(estimate)
    assert "batch 8 x 16 steps (measured at batch sizes 2, 8)" in text
    assert "optimizer state" in text and "MiB" in text and "total" in text
    inference = estimate_memory(model, 8, 16, train=False)
    assert inference.gradients == inference.optimizer_state == 0
    assert inference.total < estimate.total
    assert "optimizer state" not in str(inference)
    with pytest.raises(AttributeError):
        estimate.total = 0  # frozen


@pytest.mark.parametrize(
    "batch_size, ladder",
    [(1, [1, 2]), (2, [1, 2]), (16, [4, 16]), (17, [2, 5, 17]), (64, [4, 16, 64])],
)
def test_the_ladder_of_measured_batch_sizes(batch_size, ladder):
    # A budget that 64 fits in half of, but not in a tenth of: no rung is skipped.
    budget = 4 * estimate_memory(CfC(4, 8), 64, 4, train=False, budget=2**40).total
    estimate = estimate_memory(CfC(4, 8), batch_size, 4, train=False, budget=budget)
    assert [b for b, _ in estimate.measured] == ladder


def test_the_ladder_skips_to_a_batch_size_far_below_the_budget():
    estimate = estimate_memory(CfC(4, 8), 256, 4, train=False, budget=2**40)
    assert [b for b, _ in estimate.measured] == [4, 16, 256]


def test_bfloat16_halves_the_peak():
    model = leaky_model()  # few kernels to compile in bfloat16
    full = estimate_memory(model, 32, 4).total
    model.set_dtype(mx.bfloat16)
    assert estimate_memory(model, 32, 4).total / full == pytest.approx(0.5, abs=0.1)


def test_memory_grows_linearly_with_the_sequence():
    model = CfC(16, 64)
    mx.eval(model.parameters())
    # Nothing grows with seq_len ** 2 (slicing the per-step inputs out of the sequence one
    # by one made this about 10x).
    assert measured_peak(model, 32, 128) < 5 * measured_peak(model, 32, 32)


def test_check_memory_names_the_largest_batch_that_fits():
    model = LTC(16, AutoNCP(32, 8))
    mx.eval(model.parameters())
    budget = measured_peak(model, 256, 16) // 3
    with pytest.raises(MemoryBudgetError) as raised:
        check_memory(model, 256, 16, budget=budget)
    message = str(raised.value)
    largest = int(message.split("largest batch_size that fits is about ")[1].split(";")[0])
    assert 32 <= largest < 128
    assert re.search(
        r"needs about [\d.]+ MiB \(extrapolated from batch sizes 16 and \d+\)", message
    )
    assert f"the memory budget is {budget / MIB:.2f} MiB" in message
    assert "float16" in message and "shorten the sequences" in message
    assert measured_peak(model, largest, 16) <= 1.1 * budget
    assert measured_peak(model, int(1.3 * largest), 16) > budget
    assert check_memory(model, largest // 2, 16, budget=budget).total <= budget


def test_check_memory_when_no_batch_fits():
    with pytest.raises(MemoryBudgetError, match="no batch_size fits"):
        check_memory(CfC(16, 64), 8, 64, budget=1024)
    assert issubclass(MemoryBudgetError, NCPSError)


def test_check_memory_default_budget_and_inference():
    model = CfC(16, 64)
    assert check_memory(model, 8, 16).train
    assert not check_memory(model, 8, 16, budget=10**9, train=False).train


def test_find_batch_size_tries_only_what_fits_and_leaves_the_model_alone():
    model = LTC(16, AutoNCP(32, 8))
    budget = int(1.4 * measured_peak(copy.deepcopy(model), 16, 16))
    before = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    candidates = (8, 16, 32, 64)
    search = find_batch_size(
        model, 16, loss_fn=LOSSES["mse"], budget=budget, candidates=candidates, steps=1
    )
    assert search.batch_size in (8, 16)
    assert [t.batch_size for t in search.trials] == list(candidates)
    assert [t.fits for t in search.trials] == [True, True, False, False]
    estimates = [t.estimated_bytes for t in search.trials]
    assert estimates == sorted(estimates) and estimates[1] <= budget < estimates[2]
    for trial in search.trials:
        if trial.fits:
            assert trial.samples_per_second > 0
            assert trial.peak_bytes / trial.estimated_bytes == pytest.approx(1, abs=TOLERANCE)
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
    assert len(made) == 3  # one for the estimate, then a fresh one per candidate


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
        (lambda m: estimate_memory(m, 0, 16), r"\[estimate_memory\] 'batch_size' must be an"),
        (lambda m: estimate_memory(m, 8, -1), "'seq_len' must be an int >= 1 but got -1"),
        (lambda m: estimate_memory(m, True, 16), "'batch_size'"),
        (lambda m: estimate_memory(m, 8, 16, budget=0.5), r"\[estimate_memory\] 'budget'"),
        (lambda m: check_memory(m, 8, 16, budget=0), r"'budget' must be a number >= 1 but got 0"),
        (lambda m: check_memory(m, 8, 16, budget="1GB"), "'budget'"),
        (
            lambda m: find_batch_size(m, 16, loss_fn=nn.losses.mse_loss, candidates=()),
            "'candidates'",
        ),
        (
            lambda m: find_batch_size(m, 16, loss_fn=nn.losses.mse_loss, candidates=(8, 0)),
            "'candidates item' must be an int >= 1",
        ),
        (lambda m: find_batch_size(m, 16, loss_fn=nn.losses.mse_loss, steps=0), "'steps'"),
        (lambda m: find_batch_size(m, 0, loss_fn=nn.losses.mse_loss), "'seq_len'"),
        (lambda m: default_memory_budget(1.5), r"'fraction' must be a number in \(0, 1\]"),
    ],
)
def test_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(CfC(4, 8))
