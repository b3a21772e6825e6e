"""Behaviour of the sequence layers beyond reference parity: layouts, checks, dtypes."""

import json

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import LTC, RNN, CfC, WiringError, load, model_from_config, save
from ncps_mlx.cells import CfCCell, LTCCell
from ncps_mlx.wirings import NCP, AutoNCP, FullyConnected, Random, Wiring


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=tol, atol=tol)


MODELS = {
    "cfc": lambda: CfC(5, 8, backbone_units=16),
    "cfc_pure": lambda: CfC(5, 8, mode="pure", backbone_layers=2, backbone_units=16),
    "cfc_ncp": lambda: CfC(5, AutoNCP(12, 3)),
    "cfc_mixed": lambda: CfC(5, 8, backbone_units=16, mixed_memory=True),
    "cfc_proj": lambda: CfC(5, AutoNCP(12, 3), proj_size=2),
    "ltc_ncp": lambda: LTC(5, AutoNCP(12, 3)),
    "ltc_fc_mixed": lambda: LTC(5, 6, mixed_memory=True, ode_unfolds=2),
}


@pytest.fixture(params=sorted(MODELS))
def model(request):
    m = MODELS[request.param]()
    m.eval()
    return m


def test_unbatched_equals_batch_of_one(model):
    x = mx.random.normal((7, 5))
    y, h = model(x)
    y_b, h_b = model(x[None])
    close(y, y_b[0])
    states, states_b = (h, h_b) if isinstance(h, tuple) else ((h,), (h_b,))
    for part, part_b in zip(states, states_b, strict=True):
        close(part, part_b[0])


def test_time_first_layout_matches_batch_first(model):
    x = mx.random.normal((3, 7, 5))
    ts = mx.random.uniform(0.5, 2.0, (3, 7))
    y, _ = model(x, timespans=ts)
    model.batch_first = False
    y_t, _ = model(x.swapaxes(0, 1), timespans=ts.T)
    close(y_t.swapaxes(0, 1), y)


def test_return_sequences_off_gives_last_step(model):
    x = mx.random.normal((3, 6, 5))
    y, h = model(x)
    model.return_sequences = False
    y_last, h_last = model(x)
    close(y_last, y[:, -1])


def test_state_carries_across_calls(model):
    x = mx.random.normal((2, 8, 5))
    y, _ = model(x)
    _, h = model(x[:, :5])
    y_rest, _ = model(x[:, 5:], hx=h)
    close(y_rest, y[:, 5:])


def test_per_sample_timespans_equal_separate_runs(model):
    x = mx.random.normal((3, 6, 5))
    ts = mx.random.uniform(0.2, 3.0, (3, 6))
    y, _ = model(x, timespans=ts)
    for b in range(3):
        y_b, _ = model(x[b : b + 1], timespans=ts[b : b + 1, :, None])
        close(y[b], y_b[0])


def test_scalar_timespans_equal_constant_array(model):
    x = mx.random.normal((2, 4, 5))
    close(model(x, timespans=0.5)[0], model(x, timespans=mx.full((2, 4), 0.5))[0])
    close(model(x)[0], model(x, timespans=1.0)[0])


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_low_precision_dtypes(model, dtype):
    x = mx.random.normal((2, 5, 5))
    y32, _ = model(x)
    model.set_dtype(dtype)
    y, h = model(x, timespans=mx.ones((2, 5)))
    assert y.dtype == dtype
    assert (h[0] if isinstance(h, tuple) else h).dtype == dtype
    close(y.astype(mx.float32), y32, tol=5e-2)


def test_config_round_trip_rebuilds_same_structure(model):
    config = json.loads(json.dumps(model.get_config()))
    rebuilt = model_from_config(config)
    assert rebuilt.get_config() == model.get_config()
    shapes = {k: v.shape for k, v in _flat(model.parameters())}
    assert {k: v.shape for k, v in _flat(rebuilt.parameters())} == shapes


def _flat(tree):
    from mlx.utils import tree_flatten

    return tree_flatten(tree)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, match",
    [((3, 6, 4), "5 features"), ((6,), "shape"), ((1, 2, 3, 5), "shape"), ((3, 0, 5), "shape")],
)
def test_wrong_input_shape(shape, match):
    with pytest.raises(ValueError, match=rf"\[CfC\].*{match}"):
        CfC(5, 8)(mx.zeros(shape))


@pytest.mark.parametrize(
    "hx, match",
    [
        (mx.zeros((3, 7)), r"shape \(3, 8\)"),
        (mx.zeros((8,)), r"shape \(3, 8\)"),
        ((mx.zeros((3, 8)), mx.zeros((3, 8))), "mixed_memory=True"),
    ],
)
def test_wrong_state(hx, match):
    with pytest.raises(ValueError, match=match):
        CfC(5, 8)(mx.zeros((3, 4, 5)), hx=hx)


def test_mixed_memory_needs_pair():
    with pytest.raises(ValueError, match=r"pair \(h, c\)"):
        CfC(5, 8, mixed_memory=True)(mx.zeros((3, 4, 5)), hx=mx.zeros((3, 8)))
    with pytest.raises(ValueError, match="shape"):
        CfC(5, 8, mixed_memory=True)(mx.zeros((3, 4, 5)), hx=(mx.zeros((3, 8)), mx.zeros((3, 7))))


def test_unbatched_input_needs_unbatched_state():
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        CfC(5, 8)(mx.zeros((4, 5)), hx=mx.zeros((1, 8)))


@pytest.mark.parametrize(
    "timespans, match",
    [
        (mx.array([[1.0, float("nan"), 1.0, 1.0]] * 3), "finite"),
        (mx.array([[1.0, float("inf"), 1.0, 1.0]] * 3), "finite"),
        (mx.array([[1.0, -0.5, 1.0, 1.0]] * 3), ">= 0"),
        (-1.0, ">= 0"),
        (mx.ones((3, 5)), r"shape \(3, 4\)"),
        (mx.ones((4, 3)), r"shape \(3, 4\)"),
        (mx.ones((3, 4, 2)), r"shape \(3, 4\)"),
        (mx.ones((3,)), r"shape \(3, 4\)"),
    ],
)
def test_bad_timespans(timespans, match):
    with pytest.raises(ValueError, match=rf"\[CfC\] timespans.*{match}"):
        CfC(5, 8)(mx.zeros((3, 4, 5)), timespans=timespans)


def test_ltc_needs_positive_timespans_cfc_accepts_zero():
    x = mx.zeros((2, 3, 5))
    CfC(5, 8)(x, timespans=0.0)
    with pytest.raises(ValueError, match=r"\[LTC\] timespans must be finite and > 0"):
        LTC(5, 8)(x, timespans=mx.zeros((2, 3)))


def test_ltc_needs_the_motor_neurons_of_a_hand_made_wiring():
    wiring = Wiring(4)
    wiring.add_synapse(0, 1, 1)
    with pytest.raises(WiringError, match=r"declares no motor.*set_output_dim"):
        LTC(3, wiring)
    wiring.set_output_dim(1)
    assert LTC(3, wiring)(mx.zeros((1, 2, 3)))[0].shape == (1, 2, 1)


@pytest.mark.parametrize(
    "cell",
    [lambda: CfCCell(3, 4, backbone_layers=2), lambda: LTCCell(AutoNCP(8, 2), 3, solver="rk4")],
    ids=["cfc", "ltc"],
)
def test_a_plain_rnn_over_a_package_cell_saves_and_loads(tmp_path, cell):
    model = RNN(cell(), return_sequences=False, proj_size=2)
    loaded = load(save(model, tmp_path / "model.safetensors"))
    x = mx.random.normal((2, 5, 3))
    assert type(loaded.rnn_cell) is type(model.rnn_cell)
    assert mx.array_equal(loaded(x)[0], model(x)[0])


def test_a_plain_rnn_over_an_unregistered_cell_says_why_it_cannot_be_saved(tmp_path):
    class Unregistered(CfCCell):
        pass

    with pytest.raises(NotImplementedError, match=r"register_cell"):
        save(RNN(Unregistered(3, 4)), tmp_path / "model.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_ltc_ignores_timespans_at_padded_steps():
    x = mx.random.normal((2, 4, 5))
    mask = mx.array([[True, True, True, True], [True, True, False, False]])
    padded_with_zero = mx.array([[1.0, 0.5, 2.0, 1.0], [0.5, 1.5, 0.0, 0.0]])
    padded_with_one = mx.where(mask, padded_with_zero, 1.0)
    model = LTC(5, 8)
    y, h = model(x, timespans=padded_with_zero, mask=mask)
    y_ref, h_ref = model(x, timespans=padded_with_one, mask=mask)
    assert mx.array_equal(y, y_ref) and mx.array_equal(h, h_ref)
    with pytest.raises(ValueError, match=r"\[LTC\] timespans must be finite and > 0"):
        model(x, timespans=padded_with_zero, mask=mx.ones((2, 4), dtype=mx.bool_))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: CfC(5, 8, mode="fast"), r"\[CfCCell\] unknown mode 'fast'.*'no_gate'"),
        (lambda: CfC(5, 8, activation="swish"), r"unknown activation 'swish'.*'gelu'"),
        (
            lambda: CfC(5, 8, backbone_dropout=1.0),
            r"'backbone_dropout' must be a number in \[0, 1\)",
        ),
        (lambda: CfC(5, 0), r"'hidden_size' must be an int >= 1 but got 0"),
        (lambda: CfC(5, 8, backbone_layers=-1), "'backbone_layers'"),
        (lambda: CfC(5, 8, proj_size=0), "'proj_size'"),
        (lambda: CfC(5, AutoNCP(10, 2), backbone_units=4), "'backbone_units' cannot be used"),
        (lambda: CfC(5, 8, strict_wiring=True), "needs a wiring"),
        (lambda: LTC(5, 8, input_mapping="tanh"), r"unknown input_mapping 'tanh'"),
        (lambda: LTC(5, 8, output_mapping="relu"), r"unknown output_mapping 'relu'"),
        (lambda: LTC(5, 8, ode_unfolds=0), "'ode_unfolds'"),
        (lambda: LTC(5, 8, solver="dopri5"), r"unknown solver 'dopri5'.*'rk4'"),
        (lambda: LTC(5, 8, epsilon=-1.0), "'epsilon'"),
    ],
)
def test_bad_options(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_wiring_built_for_another_input_size():
    wiring = AutoNCP(12, 3)
    CfC(5, wiring)
    with pytest.raises(WiringError, match="5.*6|6.*5"):
        LTC(6, wiring)


@pytest.mark.parametrize("make", [lambda: AutoNCP(14, 3), lambda: NCP(5, 4, 2, 3, 2, 3, 2)])
def test_one_wiring_shared_by_two_models_is_unchanged(make):
    wiring = make()
    a = CfC(5, wiring)
    before = wiring.adjacency_matrix.copy(), wiring.sensory_adjacency_matrix.copy()
    b = LTC(5, wiring)
    assert np.array_equal(wiring.adjacency_matrix, before[0])
    assert np.array_equal(wiring.sensory_adjacency_matrix, before[1])
    assert a.wiring is b.wiring


# --- dropout, strict wiring, constraints --------------------------------------------------


@pytest.mark.parametrize("layers", [1, 2])
def test_backbone_dropout_applies_in_training_for_any_depth(layers):
    model = CfC(5, 8, backbone_units=32, backbone_layers=layers, backbone_dropout=0.5)
    x = mx.random.normal((2, 4, 5))
    model.eval()
    y_eval = model(x)[0]
    close(model(x)[0], y_eval)
    model.train()
    assert not np.allclose(np.array(model(x)[0]), np.array(y_eval))


def test_strict_wiring_follows_adjacency_and_polarity():
    wiring = NCP(6, 4, 2, 3, 2, 3, 2, seed=3)
    model = CfC(5, wiring, strict_wiring=True)
    command = model.rnn_cell.layer_1
    inter_ids, command_ids = wiring.get_neurons_of_layer(0), wiring.get_neurons_of_layer(1)
    adjacency = np.concatenate(
        [
            wiring.adjacency_matrix[np.ix_(inter_ids, command_ids)],
            wiring.adjacency_matrix[np.ix_(command_ids, command_ids)],
        ]
    ).T
    heads, _ = command.head_weights()
    ff1, ff2, t_a, t_b = np.split(np.array(heads), 4)
    for head in (ff1, ff2):
        assert np.array_equal(np.sign(head), adjacency)
    for gate in (t_a, t_b):
        assert np.array_equal(gate != 0, adjacency != 0)


def test_strict_wiring_gradients_vanish_off_the_wiring():
    import mlx.nn as nn

    wiring = AutoNCP(12, 3)
    model = CfC(5, wiring, strict_wiring=True)
    x = mx.random.normal((2, 4, 5))
    grads = nn.value_and_grad(model, lambda m, x: m(x)[0].sum())(model, x)[1]
    for index, layer in enumerate(model.rnn_cell.layers):
        mask = np.array(layer.head_masks["time_a"]) != 0
        grad = np.array(grads["rnn_cell"][f"layer_{index}"]["time_a"]["weight"])
        assert np.all(grad[~mask] == 0) and np.any(grad[mask] != 0)


def test_explicit_constraints_clip_to_zero():
    model = LTC(5, Random(8, 3, sparsity_level=0.5), implicit_param_constraints=False)
    model.rnn_cell.cm = -mx.ones_like(model.rnn_cell.cm)
    model.apply_weight_constraints()
    assert np.all(np.array(model.rnn_cell.cm) == 0)
    implicit = LTC(5, FullyConnected(8, 3))
    implicit.rnn_cell.cm = -mx.ones_like(implicit.rnn_cell.cm)
    implicit.apply_weight_constraints()  # softplus handles positivity: nothing to clip
    assert np.all(np.array(implicit.rnn_cell.cm) == -1)


@pytest.mark.parametrize(
    "wiring", [FullyConnected(8, 3), Random(8, 3, random_seed=1), AutoNCP(8, 3)]
)
def test_wired_cfc_output_size_is_what_it_outputs(wiring):
    y, _ = CfC(2, wiring)(mx.zeros((1, 4, 2)))
    assert y.shape[-1] == CfC(2, wiring).output_size
    projected = CfC(2, wiring, proj_size=5)  # the projection reads the real output width
    assert projected(mx.zeros((1, 4, 2)))[0].shape == (1, 4, 5)
