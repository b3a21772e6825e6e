"""ncps state-dict import/export checks that need no torch (parity lives in test_parity)."""

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import LTC, CfC, StateDictError
from ncps_mlx.interop import load_ncps_state_dict, to_ncps_state_dict
from ncps_mlx.wirings import AutoNCP

MODELS = {
    "cfc_backbone3_dropout": lambda: CfC(5, 8, backbone_layers=3, backbone_dropout=0.2),
    "cfc_ncp_mixed_proj": lambda: CfC(5, AutoNCP(12, 3), mixed_memory=True, proj_size=2),
    "ltc_ncp": lambda: LTC(5, AutoNCP(12, 3), output_mapping="linear"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_export_then_import_is_identity(name):
    source, target = MODELS[name](), MODELS[name]()
    source.eval(), target.eval()
    load_ncps_state_dict(target, to_ncps_state_dict(source))
    x = mx.random.normal((2, 4, 5))
    np.testing.assert_array_equal(np.array(target(x)[0]), np.array(source(x)[0]))


def test_backbone_trained_with_dropout_loads_into_one_without():
    trained = CfC(5, 8, backbone_layers=3, backbone_dropout=0.2)  # Linear at 0, 2, 5, 8
    served = CfC(5, 8, backbone_layers=3)  # Linear at 0, 2, 4, 6
    trained.eval()
    load_ncps_state_dict(served, to_ncps_state_dict(trained))
    x = mx.random.normal((2, 4, 5))
    np.testing.assert_array_equal(np.array(served(x)[0]), np.array(trained(x)[0]))
    load_ncps_state_dict(trained, to_ncps_state_dict(served))  # and back


def test_reference_key_layout():
    keys = set(to_ncps_state_dict(CfC(20, 64, backbone_layers=3, backbone_dropout=0.1)))
    # nn.Sequential(Linear, act, Linear, act, Dropout, Linear, act, Dropout) in ncps
    assert {"rnn_cell.backbone.0.weight", "rnn_cell.backbone.2.weight"} <= keys
    assert "rnn_cell.backbone.5.weight" in keys
    wired = to_ncps_state_dict(CfC(20, AutoNCP(32, 4)))
    shapes = {k: v.shape for k, v in wired.items() if k.endswith("ff1.weight")}
    assert shapes == {
        "rnn_cell.layer_0.ff1.weight": (17, 37),
        "rnn_cell.layer_1.ff1.weight": (11, 28),
        "rnn_cell.layer_2.ff1.weight": (4, 15),
    }
    ltc = to_ncps_state_dict(LTC(20, AutoNCP(32, 4)))
    assert ltc["rnn_cell.sensory_w"].shape == (20, 32) and ltc["rnn_cell.output_w"].shape == (4,)


def test_every_problem_is_reported_and_nothing_loaded():
    model = CfC(5, AutoNCP(12, 3))
    before = np.array(model.rnn_cell.layer_0.ff1.weight)
    state = to_ncps_state_dict(CfC(5, AutoNCP(12, 3)))
    del state["rnn_cell.layer_1.ff2.bias"]
    state["rnn_cell.layer_0.time_a.weight"] = np.zeros((2, 2), np.float32)
    state["rnn_cell.extra"] = np.zeros(3, np.float32)
    with pytest.raises(StateDictError) as error:
        load_ncps_state_dict(model, state)
    message = str(error.value)
    assert "missing key 'rnn_cell.layer_1.ff2.bias'" in message
    assert "'rnn_cell.layer_0.time_a.weight' has shape (2, 2)" in message
    assert "unexpected key 'rnn_cell.extra'" in message
    np.testing.assert_array_equal(np.array(model.rnn_cell.layer_0.ff1.weight), before)


def test_masks_of_another_wiring_are_refused():
    state = to_ncps_state_dict(LTC(5, AutoNCP(12, 3, seed=1)))
    with pytest.raises(StateDictError, match="sparsity_mask' disagrees with the model's wiring"):
        load_ncps_state_dict(LTC(5, AutoNCP(12, 3, seed=2)), state)


def test_strict_wiring_has_no_reference_equivalent():
    with pytest.raises(StateDictError, match="strict_wiring"):
        to_ncps_state_dict(CfC(5, AutoNCP(12, 3), strict_wiring=True))
