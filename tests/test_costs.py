"""The analytic step costs against counts worked out by hand."""

import mlx.core as mx
import mlx.nn as nn
import pytest

from ncps_mlx import LTC, RNN, Cell, CfC
from ncps_mlx.costs import layer_footprint, parameter_bytes, parameter_count, step_costs
from ncps_mlx.monitor import Monitor, step_traffic
from ncps_mlx.wirings import AutoNCP, FullyConnected, Wiring


def saved_values(model):
    """Values a training step keeps per sample and time step: the layer's and the output."""
    return layer_footprint(model).saved_values + model.output_size


def test_cfc_by_hand():
    model = CfC(2, 3, backbone_units=4)
    costs = step_costs(model, batch=1)
    # [x, h] (5) -> backbone (4) -> four heads (12); 8 elementwise flops per unit.
    assert costs["flops"] == 2 * 5 * 4 + 2 * 4 * 12 + 8 * 3
    # lecun_tanh on 4 backbone units, tanh, tanh and sigmoid on 3 units.
    assert costs["transcendentals"] == 4 + 3 * 3
    assert step_costs(model, batch=5)["flops"] == 5 * costs["flops"]


def test_ltc_by_hand():
    model = LTC(2, FullyConnected(3), ode_unfolds=6)
    costs = step_costs(model, batch=1)
    assert costs["transcendentals"] == 2 * 3 + 6 * 3 * 3
    assert costs["flops"] == 7 * 6 + 6 * (6 * 9 + 8 * 3)
    rk4 = step_costs(LTC(2, FullyConnected(3), ode_unfolds=6, solver="rk4"), batch=1)
    assert rk4["transcendentals"] == 2 * 3 + 4 * 6 * 3 * 3  # four field evaluations
    assert rk4["flops"] == 7 * 6 + 4 * 6 * (6 * 9 + 8 * 3)


def test_ltc_counts_only_the_synapse_box():
    wiring = Wiring(4)
    wiring.set_output_dim(1)
    wiring.build(2)
    wiring.add_synapse(2, 0, 1)
    wiring.add_synapse(3, 1, -1)  # box: pre 2..3 x post 0..1
    wiring.add_sensory_synapse(0, 3, 1)  # box: 1 x 1
    costs = step_costs(LTC(2, wiring, ode_unfolds=1), batch=2)
    assert costs["transcendentals"] == 2 * (1 + 2 * 2)


def test_parameter_bytes():
    model = CfC(2, 3, backbone_units=4)
    assert parameter_bytes(model) == 4 * ((5 * 4 + 4) + 4 * (4 * 3 + 3))


def test_train_costs_more_than_inference_and_counts_graph_ops():
    model = CfC(2, 3, backbone_units=4)
    inference, train = step_costs(model), step_costs(model, mode="train")
    assert 0 < inference["graph_ops"] < train["graph_ops"]
    assert train["flops"] == 3 * inference["flops"]
    import mlx.core as mx

    y, _ = model(mx.zeros((1, 2, 2)))  # counting left the model usable
    mx.eval(y)
    with pytest.raises(ValueError, match="unknown mode 'eval'"):
        step_costs(model, mode="eval")


@pytest.mark.parametrize("family", ["LTC", "CfC"])
def test_graph_ops_count_the_gpu_path_unless_asked_for_the_cpu(family):
    from ncps_mlx import kernels
    from ncps_mlx.costs import graph_ops_per_step
    from ncps_mlx.wirings import AutoNCP

    model = (LTC if family == "LTC" else CfC)(4, AutoNCP(10, 2, seed=0))
    on_metal = graph_ops_per_step(model, 2, mode="train")
    with kernels.disabled():  # the default count does not depend on the kernels
        assert graph_ops_per_step(model, 2, mode="train") == on_metal
    if kernels.unavailable_reason() is None:
        # One fused primitive per step (and one for its gradient) instead of a graph.
        assert graph_ops_per_step(model, 2, mode="train", cpu=True) < on_metal / 3


# -- the traffic model against hand counts -------------------------------------------
def test_traffic_of_a_small_cfc_by_hand():
    # CfC(2, 3), one backbone layer of 4: backbone 5x4+4 = 24, heads 4 x (4x3+3) = 60.
    model = CfC(2, 3, backbone_units=4, backbone_layers=1)
    assert parameter_count(model) == 84
    # Per sample and step: backbone pre/post 2x4, heads 4x3, tanh x2 + gate + h' 4x3, y 3.
    assert saved_values(model) == 8 + 12 + 12 + 3
    t = step_traffic(model, batch_size=2, seq_len=5)  # float32, Adam
    assert t.parameters == 3 * 84 * 4
    assert t.gradients == 2 * 84 * 4
    assert t.optimizer_state == 2 * 2 * 84 * 4
    assert t.activations == 2 * (2 * 5) * 35 * 4
    assert t.inputs == (2 * 5 * 2 + 2 * 5 * 3) * 4
    assert t.total == 1008 + 672 + 1344 + 2800 + 200
    inference = step_traffic(model, 2, 5, train=False)
    assert inference.total == 84 * 4 + (2 * 5 * 2) * 4 + (2 * 5 * 3 + 2 * 3) * 4


def test_traffic_of_a_small_ltc_by_hand():
    model = LTC(2, AutoNCP(5, 1), ode_unfolds=3, mixed_memory=True)
    cell = model.rnn_cell
    s, ss, n = cell.synapse_count, cell.sensory_synapse_count, 5
    # Sensory conductances + their two sums, then per unfold the conductances, the two
    # sums and the potential; the LSTM's 7 x n; the output.
    per_step = (ss + 2 * n) + 3 * (s + 2 * n + n) + 7 * n + 1
    assert saved_values(model) == per_step
    t = step_traffic(model, batch_size=3, seq_len=4, optimizer_slots=0)
    assert t.optimizer_state == 0
    assert t.activations == 2 * 12 * per_step * 4


def test_traffic_of_wired_cfc_sums_its_layers():
    model = CfC(3, AutoNCP(10, 2), mode="pure")
    layers = model.rnn_cell.layer_sizes
    # Pure mode per layer of n: one head n, decay and h' 2n; plus the output.
    assert saved_values(model) == sum(3 * n for n in layers) + 2


class Undeclared(Cell):
    """A cell that declares no footprint: h' = tanh(W x + h)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 3)

    input_size = property(lambda self: 2)
    state_size = property(lambda self: 3)
    output_size = property(lambda self: 3)

    def step(self, consts, inputs, h, dt):
        h = mx.tanh(self.linear(inputs) + h)
        return h, h


def test_a_cell_without_a_footprint_gets_no_estimate_and_no_error():
    model = RNN(Undeclared())
    costs = step_costs(model, batch=2, mode="train")
    assert costs["flops"] is None and costs["transcendentals"] is None
    assert costs["graph_ops"] > 0 and costs["bytes"] == 3 * (parameter_bytes(model) + 4 * 2 * 11)
    assert step_traffic(model, 2, 5) is None
    assert step_traffic(model, 2, 5, train=False).total > 0
    monitor = Monitor(0.05, ["mlx"], model=model, seq_len=5)
    with monitor, monitor.step(samples=2):
        pass
    assert monitor.steps[0]["est_bytes"] is None
