"""Checkpoints: round trips, atomic writes and clear errors."""

import mlx.core as mx
import numpy as np
import pytest

import ncps_mlx
from ncps_mlx import LTC, CfC, CheckpointError, io
from ncps_mlx.wirings import NCP, AutoNCP, Random, Wiring

MODELS = {
    "cfc": lambda: CfC(4, 8, backbone_units=16, backbone_layers=2, mode="no_gate"),
    "cfc_ncp_mixed": lambda: CfC(4, AutoNCP(12, 3, seed=5), mixed_memory=True, proj_size=2),
    "cfc_strict": lambda: CfC(4, NCP(5, 4, 2, 3, 2, 3, 2, seed=9), strict_wiring=True),
    "ltc_random": lambda: LTC(4, Random(8, 2, 0.4), ode_unfolds=3, solver="rk4"),
    "ltc_custom": lambda: LTC(4, _custom_wiring(), input_mapping=None),
}


def _custom_wiring():
    wiring = Wiring(4)
    wiring.set_output_dim(1)
    wiring.build(4)
    for src, dest, polarity in [(1, 0, 1), (2, 1, -1), (3, 2, 1), (0, 3, -1)]:
        wiring.add_synapse(src, dest, polarity)
    for src in range(4):
        wiring.add_sensory_synapse(src, 3, 1)
    return wiring


@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip_gives_same_function(tmp_path, name):
    model = MODELS[name]()
    path = ncps_mlx.save(model, tmp_path / "model", metadata={"note": name})
    assert path.name == "model.safetensors"
    loaded = ncps_mlx.load(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    x = mx.random.normal((2, 5, 4))
    model.eval(), loaded.eval()
    np.testing.assert_array_equal(np.array(loaded(x)[0]), np.array(model(x)[0]))
    assert io.read_checkpoint(path)[0]["metadata"] == {"note": name}


def test_low_precision_weights_keep_their_dtype(tmp_path):
    model = CfC(4, 8)
    model.set_dtype(mx.bfloat16)
    loaded = ncps_mlx.load(ncps_mlx.save(model, tmp_path / "m.safetensors"))
    assert loaded.dtype == mx.bfloat16


def test_load_weights_into_matching_model(tmp_path):
    model = LTC(4, AutoNCP(10, 2))
    path = ncps_mlx.save(model, tmp_path / "m.safetensors")
    other = LTC(4, AutoNCP(10, 2))
    ncps_mlx.load_weights(other, path)
    np.testing.assert_array_equal(np.array(other.rnn_cell.w), np.array(model.rnn_cell.w))


def test_load_weights_of_another_model_names_the_differences(tmp_path):
    path = ncps_mlx.save(CfC(4, 8, backbone_units=16), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="another model(.|\n)*backbone_units: checkpoint 16"):
        ncps_mlx.load_weights(CfC(4, 8, backbone_units=32), path)


def _edited_ncp():
    wiring = AutoNCP(10, 2, seed=3)
    wiring.build(4)
    wiring.add_synapse(9, 0, -1)  # not described by the wiring's arguments and seed
    return wiring


def test_an_edited_wiring_is_caught_and_loads_into_a_model_with_the_same_edits(tmp_path):
    model = LTC(4, _edited_ncp())
    path = ncps_mlx.save(model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match=r"saved wiring differs from the model's"):
        ncps_mlx.load(path)
    with pytest.raises(CheckpointError, match=r"saved wiring differs from the model's"):
        ncps_mlx.load_weights(LTC(4, AutoNCP(10, 2, seed=3)), path)
    same = ncps_mlx.load_weights(LTC(4, _edited_ncp()), path)
    x = mx.random.normal((2, 3, 4))
    np.testing.assert_array_equal(np.array(same(x)[0]), np.array(model(x)[0]))


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = CfC(4, 8)
    path = ncps_mlx.save(model, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def half_write(file, arrays, metadata=None):
        file.write(b"\x00" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(mx, "save_safetensors", half_write)
    with pytest.raises(KeyboardInterrupt):
        ncps_mlx.save(CfC(4, 8), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


@pytest.mark.parametrize("keep", [10, 200, -40])
def test_truncated_file_is_refused(tmp_path, keep):
    path = ncps_mlx.save(LTC(4, 6), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ncps_mlx.load(path)


def test_missing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        ncps_mlx.load(tmp_path / "absent.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    mx.save_safetensors(str(foreign), {"w": mx.ones((2,))})
    with pytest.raises(CheckpointError, match="not an ncps_mlx checkpoint"):
        ncps_mlx.load(foreign)


def test_tensor_that_does_not_fit_is_named(tmp_path):
    path = tmp_path / "m.safetensors"
    model = CfC(4, 8)
    ncps_mlx.save(model, path)
    header, arrays = io.read_checkpoint(path)
    arrays["model.rnn_cell.ff1.weight"] = mx.zeros((3, 3))
    import json

    mx.save_safetensors(str(path), arrays, metadata={"ncps_mlx": json.dumps(header)})
    with (
        pytest.raises(CheckpointError, match=r"'rnn_cell.ff1.weight' has shape \(3, 3\)"),
        pytest.warns(ncps_mlx.UnverifiedCheckpointWarning),
    ):
        ncps_mlx.load(path)


@ncps_mlx.register_cell
class _DecayCell(ncps_mlx.Cell):
    """A registered cell of a user's own: h' = h * exp(-dt / tau) + x W."""

    def __init__(self, input_size: int, hidden_size: int, tau: float = 1.0):
        super().__init__()
        self.sizes, self.tau = (input_size, hidden_size), tau
        self.map = mx.zeros((input_size, hidden_size))

    input_size = property(lambda self: self.sizes[0])
    state_size = output_size = property(lambda self: self.sizes[1])

    def step(self, consts, inputs, h, dt):
        h = h * mx.exp(-dt / self.tau) + inputs @ self.map
        return h, h

    def get_config(self):
        return {"input_size": self.input_size, "hidden_size": self.state_size, "tau": self.tau}


def _resealed(path, edit):
    """``path`` with ``edit(config)`` applied to its model config and a valid digest."""
    import json

    from ncps_mlx import _safetensors

    arrays, metadata = mx.load(str(path), return_metadata=True)
    header = json.loads(metadata["ncps_mlx"])
    edit(header["model"])
    text = json.dumps(header)
    digest = _safetensors.digest(text, arrays)
    mx.save_safetensors(str(path), arrays, metadata={"ncps_mlx": text, "ncps_mlx.sha256": digest})


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c["cell"]["config"].update(hidden_size="4"), r"hidden_size: got '4'"),
        (lambda c: c["cell"]["config"].update(colour=1), r"colour: unknown argument"),
        (lambda c: c["cell"].update(class_name="Unknown"), r"unknown cell class 'Unknown'"),
        (lambda c: c.update(cell=[1]), r"model.cell: expected"),
        (lambda c: c.update(return_sequences="false"), r"return_sequences: got 'false'"),
    ],
)
def test_a_user_cells_config_is_checked_before_it_is_built(tmp_path, edit, expected):
    model = ncps_mlx.RNN(_DecayCell(3, 4))
    path = ncps_mlx.save(model, tmp_path / "m.safetensors")
    assert isinstance(ncps_mlx.load(path).rnn_cell, _DecayCell)
    _resealed(path, edit)
    with pytest.raises(CheckpointError, match=expected):
        ncps_mlx.load(path)
