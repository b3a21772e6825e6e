"""The last gaps the reference's own test suite found, translated to ncps_mlx: a wiring's
networkx graph, the wired cells' sizes, a cell's timespan and the unbatched output shape.

Tests named ``*_reference*`` compare with ncps 1.0.1 and skip without it; the others hold
without the reference. The deliberate deviations of docs/migration.md these items touch
are checked against the reference here too, so the page cannot drift from it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import LTC, CfC
from ncps_mlx import wirings as ours
from ncps_mlx.cells import CfCCell, LTCCell, WiredCfCCell
from ncps_mlx.errors import WiringError, see

ROOT = Path(__file__).resolve().parents[1]


def _reference_wirings():
    return pytest.importorskip(
        "ncps.wirings", reason="reference package ncps not installed", exc_type=ImportError
    )


def _reference_torch():
    pytest.importorskip("torch", reason="torch not installed (the interop extra)")
    return pytest.importorskip("ncps.torch", reason="reference package ncps not installed")


def _networkx():
    return pytest.importorskip("networkx", reason="networkx not installed (the graph extra)")


def _custom(module):
    wiring = module.Wiring(4)
    wiring.set_output_dim(2)
    for src, dest, polarity in [(0, 1, 1), (1, 0, -1), (2, 2, 1), (3, 0, -1), (3, 1, 1)]:
        wiring.add_synapse(src, dest, polarity)
    wiring.build(2)
    wiring.add_sensory_synapse(0, 3, -1)
    wiring.add_sensory_synapse(1, 2, 1)
    return wiring


# Each builds the same wiring from either module: ncps.wirings or ncps_mlx.wirings.
WIRINGS = {
    "AutoNCP": lambda m: m.AutoNCP(16, 3, seed=5),
    "NCP-zero-fanin": lambda m: m.NCP(10, 8, 6, 3, 3, 0, 0),
    "FullyConnected": lambda m: m.FullyConnected(5, 2),
    "FullyConnected-no-self": lambda m: m.FullyConnected(4, self_connections=False),
    "Random": lambda m: m.Random(6, 2, 0.5),
    "custom": _custom,
}


def _built(make, module, input_dim=3):
    wiring = make(module)
    if not wiring.is_built():
        wiring.build(input_dim)
    return wiring


# -- Wiring.get_graph --------------------------------------------------------------------


@pytest.mark.parametrize("name", WIRINGS)
def test_get_graph_matches_reference(name):
    _networkx()
    expected = _built(WIRINGS[name], _reference_wirings()).get_graph()
    graph = _built(WIRINGS[name], ours).get_graph()
    assert type(graph) is type(expected)
    # Order included: the reference's draw_graph lays the nodes out in this order.
    assert list(graph.nodes(data=True)) == list(expected.nodes(data=True))
    assert list(graph.edges(data=True)) == list(expected.edges(data=True))
    assert graph.graph == expected.graph


@pytest.mark.parametrize("name", WIRINGS)
def test_get_graph_holds_every_neuron_and_synapse(name):
    _networkx()
    wiring = _built(WIRINGS[name], ours)
    graph = wiring.get_graph()
    neurons = {f"neuron_{i}": wiring.get_type_of_neuron(i) for i in range(wiring.units)}
    sensory = {f"sensory_{i}": "sensory" for i in range(wiring.input_dim)}
    assert dict(graph.nodes(data="neuron_type")) == {**neurons, **sensory}
    polarity = {1: "excitatory", -1: "inhibitory"}
    edges = {
        (f"neuron_{s}", f"neuron_{d}"): polarity[wiring.adjacency_matrix[s, d]]
        for s, d in zip(*np.nonzero(wiring.adjacency_matrix), strict=True)
    }
    edges.update(
        {
            (f"sensory_{s}", f"neuron_{d}"): polarity[wiring.sensory_adjacency_matrix[s, d]]
            for s, d in zip(*np.nonzero(wiring.sensory_adjacency_matrix), strict=True)
        }
    )
    assert {(a, b): p for a, b, p in graph.edges(data="polarity")} == edges
    assert len(edges) == wiring.synapse_count + wiring.sensory_synapse_count


def test_get_graph_without_sensory_neurons_and_independent_of_the_wiring():
    _networkx()
    wiring = _built(WIRINGS["AutoNCP"], ours)
    graph = wiring.get_graph(include_sensory_neurons=False)
    assert list(graph.nodes) == [f"neuron_{i}" for i in range(wiring.units)]
    assert graph.number_of_edges() == wiring.synapse_count
    before = wiring.adjacency_matrix.copy()
    graph.remove_edges_from(list(graph.edges))
    np.testing.assert_array_equal(wiring.adjacency_matrix, before)


def test_reference_ignores_include_sensory_neurons():
    # The deviation docs/migration.md lists: the reference's argument does nothing.
    _networkx()
    reference = _built(WIRINGS["AutoNCP"], _reference_wirings())
    graph = reference.get_graph(include_sensory_neurons=False)
    assert graph.number_of_nodes() == reference.units + reference.input_dim


def test_get_graph_needs_a_built_wiring():
    with pytest.raises(WiringError, match=r"\[AutoNCP\] get_graph\(\) needs a built wiring"):
        ours.AutoNCP(16, 3).get_graph()


def test_get_graph_without_networkx_says_what_to_install(monkeypatch):
    wiring = _built(WIRINGS["AutoNCP"], ours)
    monkeypatch.setitem(sys.modules, "networkx", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"networkx: pip install 'ncps-mlx\[graph\]'") as info:
        wiring.get_graph()
    assert str(info.value).endswith(see("missing-extra"))


def test_graph_extra_installs_networkx():
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [r.split(">")[0] for r in project["optional-dependencies"]["graph"]] == ["networkx"]
    assert not any("networkx" in r for r in project["dependencies"])


# -- sensory_size, motor_size, num_layers of the wired cells ------------------------------


CELL_WIRINGS = {
    "NCP": lambda m: m.NCP(6, 4, 2, 3, 2, 3, 2),
    "FullyConnected": lambda m: m.FullyConnected(8, 3),
}


@pytest.mark.parametrize("wiring", CELL_WIRINGS)
@pytest.mark.parametrize("cell", ["LTCCell", "WiredCfCCell"])
def test_cell_sizes_match_reference(cell, wiring):
    reference = _reference_torch()
    make = CELL_WIRINGS[wiring]
    if cell == "LTCCell":
        theirs = reference.LTCCell(make(_reference_wirings()), in_features=5)
        mine = LTCCell(make(ours), in_features=5)
    else:
        theirs = reference.WiredCfCCell(5, make(_reference_wirings()))
        mine = WiredCfCCell(5, make(ours))
    assert (mine.sensory_size, mine.motor_size) == (theirs.sensory_size, theirs.motor_size)
    assert (mine.state_size, mine.input_size) == (theirs.state_size, 5)
    if cell == "WiredCfCCell":
        assert mine.num_layers == theirs.num_layers
        assert mine.layer_sizes == theirs.layer_sizes


def test_cell_sizes_follow_the_wiring():
    wiring = ours.NCP(6, 4, 2, 3, 2, 3, 2)
    ltc, cfc = LTCCell(wiring, in_features=5), WiredCfCCell(None, wiring)
    for cell in (ltc, cfc):
        assert (cell.sensory_size, cell.motor_size) == (5, 2)
    assert ltc.output_size == ltc.motor_size
    assert cfc.num_layers == 3


def test_reference_wired_cfc_output_size_is_not_its_output_size():
    # The deviation docs/migration.md lists: with a one-layer wiring the reference's
    # WiredCfCCell outputs every neuron but reports output_dim.
    torch = pytest.importorskip("torch", reason="torch not installed")
    theirs = _reference_torch().WiredCfCCell(5, _reference_wirings().FullyConnected(8, 3))
    y, _ = theirs(torch.zeros(2, 5), torch.zeros(2, 8), 1.0)
    assert (theirs.output_size, y.shape[-1]) == (3, 8)
    mine = WiredCfCCell(5, ours.FullyConnected(8, 3))
    y, _ = mine(mx.zeros((2, 5)), mx.zeros((2, 8)))
    assert mine.output_size == y.shape[-1] == 8
    assert mine.motor_size == 3


# -- a cell's timespan ---------------------------------------------------------------------


def _cells():
    return {
        "LTCCell": LTCCell(ours.AutoNCP(8, 2, seed=1), in_features=3),
        "CfCCell": CfCCell(3, 8, backbone_units=16),
        "WiredCfCCell": WiredCfCCell(3, ours.AutoNCP(8, 2, seed=1)),
    }


@pytest.fixture(params=["LTCCell", "CfCCell", "WiredCfCCell"])
def cell(request):
    return _cells()[request.param]


def _step_inputs(cell, batch):
    x = mx.random.normal((batch, 3))
    h = mx.random.normal((batch, cell.state_size))
    dt = mx.random.uniform(0.5, 2.0, (batch,))
    return x, h, dt


@pytest.mark.parametrize("batch", [4, 8])  # 8 is the number of units: no broadcast mix-up
def test_cell_takes_one_timespan_per_sample_as_a_vector(cell, batch):
    x, h, dt = _step_inputs(cell, batch)
    expected = cell(x, h, dt[:, None])
    for given in (dt, np.array(dt), np.array(dt).tolist()):
        for got, want in zip(cell(x, h, given), expected, strict=True):
            np.testing.assert_array_equal(np.array(got), np.array(want))
    # Each sample stepped alone with its own timespan gives its row of the batch.
    for b in range(batch):
        alone = cell(x[b : b + 1], h[b : b + 1], dt[b].item())
        np.testing.assert_allclose(np.array(alone[1][0]), np.array(expected[1][b]), atol=1e-5)


def test_cell_vector_timespan_is_not_broadcast_against_the_units():
    # With the batch size equal to the units, broadcasting (B,) against (B, units) runs
    # and gives unit j of every sample sample j's timespan: what the cell no longer does.
    cell = _cells()["CfCCell"]
    x, h, dt = _step_inputs(cell, cell.state_size)
    consts = cell.derive()
    broadcast, _ = cell.step(consts, cell.project(consts, x), h, dt)
    per_sample, _ = cell(x, h, dt)
    assert not mx.allclose(per_sample, broadcast)


def test_cell_takes_a_number_or_a_scalar_array(cell):
    x, h, _ = _step_inputs(cell, 4)
    expected = cell(x, h, 0.7)
    for given in (mx.array(0.7), np.float32(0.7), mx.full((4, 1), 0.7)):
        np.testing.assert_allclose(np.array(cell(x, h, given)[1]), np.array(expected[1]))


@pytest.mark.parametrize("shape", [(1, 4), (4, 2), (4, 1, 1), (5,), (1,), (1, 1)])
def test_cell_refuses_other_timespan_shapes(cell, shape):
    x, h, _ = _step_inputs(cell, 4)
    owner = type(cell).__name__
    message = (
        rf"\[{owner}\] 'dt' must be a number or an array of shape \(4,\) or \(4, 1\) "
        rf"\(one timespan per sample\), but got shape {re.escape(str(shape))}\n"
        + re.escape(see("timespans"))
        + "$"
    )
    with pytest.raises(ValueError, match=message):
        cell(x, h, mx.ones(shape))


@pytest.mark.parametrize("dt", ["1", None, True, {"dt": 1.0}])
def test_cell_refuses_timespans_that_are_no_number_or_array(cell, dt):
    x, h, _ = _step_inputs(cell, 4)
    with pytest.raises(ValueError, match=r"'dt' must be a number or an array of shape \(4,\)"):
        cell(x, h, dt)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("as_array", [False, True])
def test_cell_refuses_timespan_values(cell, value, as_array):
    x, h, dt = _step_inputs(cell, 4)
    positive = cell.requires_positive_timespans
    given = mx.concatenate([dt[:3], mx.array([value])]) if as_array else value
    if value == 0.0 and not positive:  # a CfC accepts zero elapsed time
        cell(x, h, given)
        return
    allowed = "> 0" if positive else ">= 0"
    with pytest.raises(ValueError, match=rf"'dt' must be finite and {allowed}, but got values"):
        cell(x, h, given)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16, mx.int32])
def test_cell_checks_timespans_of_any_dtype(dtype):
    cell = _cells()["LTCCell"]
    x, h, dt = _step_inputs(cell, 4)
    cell(x, h, (dt * 2).astype(dtype))
    with pytest.raises(ValueError, match=r"'dt' must be finite and > 0, but got values in \[0"):
        cell(x, h, mx.concatenate([dt[:3], mx.zeros((1,))]).astype(dtype))


def test_cell_timespan_checks_inside_transformations():
    cell = _cells()["LTCCell"]
    x, h, dt = _step_inputs(cell, 4)
    step = mx.compile(lambda x, h, dt: cell(x, h, dt)[1])
    np.testing.assert_allclose(np.array(step(x, h, dt)), np.array(cell(x, h, dt)[1]), atol=1e-6)
    step(x, h, mx.zeros((4,)))  # values cannot be read while compiling: not checked
    with pytest.raises(ValueError, match=r"'dt' must be .* but got shape \(4, 2\)"):
        step(x, h, mx.ones((4, 2)))  # shapes are known, so still checked
    stacked = [mx.stack([a, a]) for a in (x, h, dt)]
    mapped = mx.vmap(lambda x, h, dt: cell(x, h, dt)[1])(*stacked)
    np.testing.assert_allclose(np.array(mapped[1]), np.array(cell(x, h, dt)[1]), atol=1e-6)
    grad = mx.grad(lambda dt: cell(x, h, dt)[1].sum())
    np.testing.assert_allclose(np.array(grad(dt)), np.array(grad(dt[:, None]))[:, 0])


def test_reference_cell_broadcasts_a_vector_timespan_against_the_units():
    # What the deviation of docs/migration.md fixes: the reference's CfCCell, given a
    # (B,) timespan with B equal to its units, mixes the samples up.
    theirs = _reference_torch().CfCCell(3, 8, backbone_units=16)
    torch = pytest.importorskip("torch")
    x, h = torch.randn(8, 3), torch.randn(8, 8)
    dt = torch.rand(8) + 0.5
    with torch.no_grad():
        vector, _ = theirs(x, h, dt)
        per_sample, _ = theirs(x, h, dt[:, None])
    assert not torch.allclose(vector, per_sample)


# -- unbatched output shape ------------------------------------------------------------------


@pytest.mark.parametrize("model", [CfC, LTC])
@pytest.mark.parametrize("units", [8, "NCP"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_unbatched_last_output_has_no_batch_axis(model, units, batch_first):
    wiring = ours.AutoNCP(8, 2, seed=0) if units == "NCP" else units
    layer = model(3, wiring, batch_first=batch_first, return_sequences=False)
    x = mx.random.normal((5, 3))
    y, h = layer(x)
    assert (y.shape, h.shape) == ((layer.output_size,), (layer.state_size,))
    batched = x[None] if batch_first else x[:, None]
    y_batched, _ = layer(batched)
    np.testing.assert_allclose(np.array(y), np.array(y_batched[0]), atol=1e-6)


@pytest.mark.parametrize("model", ["CfC", "LTC"])
def test_reference_unbatched_time_major_output_shape(model):
    # The deviation docs/migration.md lists: with batch_first=False the reference squeezes
    # axis 1 of the (1, outputs) last output, which keeps its batch axis, or drops the
    # feature axis when there is one output.
    torch = pytest.importorskip("torch", reason="torch not installed")
    reference, wirings = _reference_torch(), _reference_wirings()
    shapes = []
    for outputs in (2, 1):
        layer = getattr(reference, model)(
            3, wirings.AutoNCP(8, outputs), batch_first=False, return_sequences=False
        )
        y, h = layer(torch.zeros(5, 3))
        shapes.append((tuple(y.shape), tuple(h.shape)))
    assert shapes == [((1, 2), (8,)), ((1,), (8,))]


# -- NCP arguments the reference accepts and these wirings refuse --------------------------


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"motor_neurons": 0}, r"'motor_neurons' must be an int >= 1 but got 0"),
        ({"recurrent_command_synapses": -2}, r"'recurrent_command_synapses'.*>= 0 but got -2"),
    ],
)
def test_reference_builds_ncps_refused_here(changes, match):
    args = dict(
        inter_neurons=10,
        command_neurons=8,
        motor_neurons=6,
        sensory_fanout=3,
        inter_fanout=3,
        recurrent_command_synapses=4,
        motor_fanin=0,
    )
    args.update(changes)
    reference = _reference_wirings().NCP(**args)
    reference.build(3)  # accepted: no motor neuron, or no recurrent synapse
    with pytest.raises(ValueError, match=match):
        ours.NCP(**args)
