"""The compiled train step and inference path compute what the plain model computes."""

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from ncps_mlx import LTC, CfC
from ncps_mlx.training import make_predict, make_train_step
from ncps_mlx.training.losses import LOSSES
from ncps_mlx.wirings import AutoNCP

MODELS = {
    "cfc_ncp": lambda: CfC(4, AutoNCP(12, 3)),
    "cfc_mixed_proj": lambda: CfC(4, 8, backbone_units=16, mixed_memory=True, proj_size=3),
    "ltc_explicit": lambda: LTC(4, AutoNCP(12, 3), implicit_param_constraints=False),
}


def batch(model, steps=6):
    x = mx.random.normal((5, steps, 4))
    y = mx.random.normal((5, steps, model.output_size))
    return x, y, mx.random.uniform(0.5, 1.5, (5, steps))


def params(model):
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_compiled_step_equals_uncompiled(name):
    mx.random.seed(3)
    a = MODELS[name]()
    b = MODELS[name]()
    b.update(a.parameters())
    x, y, ts = batch(a)
    steps = [
        make_train_step(m, optim.Adam(1e-2), nn.losses.mse_loss, compile=c)
        for m, c in ((a, True), (b, False))
    ]
    for _ in range(3):
        losses = [step(x, y, ts).item() for step in steps]
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for key, value in params(b).items():
        np.testing.assert_allclose(params(a)[key], value, rtol=1e-4, atol=1e-6)


def test_training_reduces_the_loss():
    model = CfC(4, AutoNCP(12, 3))
    x, y, _ = batch(model)
    step = make_train_step(model, optim.Adam(3e-2), nn.losses.mse_loss)
    losses = [step(x, y).item() for _ in range(40)]
    assert losses[-1] < 0.7 * losses[0]


def test_explicit_constraints_are_applied_after_each_update():
    model = LTC(4, AutoNCP(12, 3), implicit_param_constraints=False)
    x, y, _ = batch(model)
    step = make_train_step(model, optim.SGD(learning_rate=50.0), nn.losses.mse_loss)
    for _ in range(3):
        step(x, y)
        for name in ("w", "sensory_w", "cm", "gleak"):
            assert np.array(getattr(model.rnn_cell, name)).min() >= 0


def test_bad_input_is_refused_before_compiling():
    model = CfC(4, 8)
    step = make_train_step(model, optim.Adam(1e-3), nn.losses.mse_loss)
    with pytest.raises(ValueError, match="4 features"):
        step(mx.zeros((2, 3, 5)), mx.zeros((2, 3, 8)))
    with pytest.raises(ValueError, match="timespans must be finite"):
        step(mx.zeros((2, 3, 4)), mx.zeros((2, 3, 8)), mx.full((2, 3), float("nan")))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_predict_equals_model_call(name):
    model = MODELS[name]()
    x, _, ts = batch(model)
    predict = make_predict(model)
    y, state = predict(x, timespans=ts)
    y_ref, state_ref = model(x, timespans=ts)
    np.testing.assert_allclose(np.array(y), np.array(y_ref), rtol=1e-5, atol=1e-6)
    y1, _ = predict(x[:1, :1], hx=first_sample(state, model))
    assert y1.shape == (1, 1, model.output_size)


@pytest.mark.parametrize("compile", [True, False], ids=["compiled", "eager"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_frozen_predict_runs_the_weights_it_was_built_with(name, compile):
    model = MODELS[name]()
    x, _, ts = batch(model)
    hx = first_sample(model(x)[1], model)
    frozen = make_predict(model, compile=compile, frozen=True)
    before = model(x[:1, :2], hx, ts[:1, :2])
    # One step at a time with the state carried, as a controller calls it.
    carried, outputs = hx, []
    for t in range(2):
        y, carried = frozen(x[:1, t : t + 1], carried, ts[:1, t : t + 1])
        outputs.append(y)
    close_trees((mx.concatenate(outputs, axis=1), carried), before)
    # Changing the model's weights, by a new array or in place, leaves the copy alone.
    model.update(tree_map(lambda w: w * 0.5, model.parameters()))
    first = tree_flatten(model.parameters())[0][1]
    first[...] = 0.0
    close_trees(frozen(x[:1, :2], hx, ts[:1, :2]), before)
    changed = make_predict(model, compile=compile, frozen=True)(x[:1, :2], hx, ts[:1, :2])
    close_trees(changed, model(x[:1, :2], hx, ts[:1, :2]))
    assert not np.allclose(np.array(changed[0]), np.array(before[0]))


def close_trees(a, b):
    for found, expected in zip(tree_flatten(a), tree_flatten(b), strict=True):
        np.testing.assert_allclose(np.array(found[1]), np.array(expected[1]), rtol=1e-5, atol=1e-6)


def first_sample(state, model):
    return tuple(s[:1] for s in state) if model.mixed_memory else state[:1]


def test_compiled_polynomial_path_matches_eager_ltc():
    # A batch large enough that the synapse grid takes the polynomial sigmoid when compiled.
    model = LTC(16, AutoNCP(32, 8))
    x = mx.random.normal((32, 5, 16))
    y, h = make_predict(model)(x)
    y_eager, h_eager = model(x)
    np.testing.assert_allclose(np.array(y), np.array(y_eager), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(h), np.array(h_eager), rtol=1e-5, atol=1e-6)


def variable_length_batch(steps=7):
    rng = np.random.default_rng(1)
    lengths = np.array([7, 2, 5, 4])
    mask = np.arange(steps)[None] < lengths[:, None]
    x = rng.normal(size=(4, steps, 4)).astype(np.float32)
    return x, lengths, mask


def test_masked_loss_is_the_mean_over_real_steps():
    mx.random.seed(0)
    model = CfC(4, AutoNCP(12, 3))
    twin = CfC(4, AutoNCP(12, 3))
    twin.update(model.parameters())
    x, lengths, mask = variable_length_batch()
    y = np.random.default_rng(2).normal(size=(4, 7, 3)).astype(np.float32)
    loss = make_train_step(model, optim.SGD(0.0), LOSSES["mse"])(x, y, mask=mask).item()
    # Independently: each sample run alone on its real steps, squared errors pooled.
    errors = [
        (np.array(twin(x[i : i + 1, :n])[0])[0] - y[i, :n]) ** 2 for i, n in enumerate(lengths)
    ]
    assert loss == pytest.approx(np.concatenate(errors).mean(), rel=1e-5)


def test_a_scalar_loss_with_a_sequence_mask_is_refused():
    model = CfC(4, AutoNCP(12, 3))
    x, _, mask = variable_length_batch()
    step = make_train_step(model, optim.SGD(0.1), nn.losses.mse_loss, compile=False)
    with pytest.raises(ValueError, match="returned a scalar"):
        step(x, np.zeros((4, 7, 3), np.float32), mask=mask)


def test_clip_norm_bounds_the_update():
    mx.random.seed(0)
    model = CfC(4, 8)
    before = params(model)
    x, y, _ = batch(model)
    make_train_step(model, optim.SGD(learning_rate=1.0), nn.losses.mse_loss, clip_norm=1e-3)(x, y)
    change = np.sqrt(sum(((params(model)[k] - v) ** 2).sum() for k, v in before.items()))
    assert change == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (np.zeros((5, 6, 2), np.float32), r"float targets must have shape \(5, 6, 3\)"),
        (np.zeros((5, 3), np.float32), r"float targets must have shape \(5, 6, 3\)"),
        (np.zeros((5, 6, 3), np.int32), r"integer class labels must have shape \(5, 6\)"),
    ],
)
def test_targets_of_the_wrong_shape_are_refused(target, match):
    model = CfC(4, AutoNCP(12, 3))
    x, _, _ = batch(model)
    step = make_train_step(model, optim.Adam(1e-3), nn.losses.mse_loss)
    with pytest.raises(ValueError, match=match):
        step(x, target)
