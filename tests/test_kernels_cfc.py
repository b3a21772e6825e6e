"""The fused CfC step (ncps_mlx.kernels.cfc_step) against MLX operations: the primitive
alone, and the CfC cells and layers (with a backbone, wired, every mode) on both paths."""

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ncps_mlx import CfC, CfCCell, WiredCfCCell, kernels
from ncps_mlx.training import make_train_step
from ncps_mlx.wirings import NCP, AutoNCP, FullyConnected, Random
from tests.kernel_checks import (
    CALLS,
    KERNEL_MARKS,
    both_paths,
    check_layer_on_both_paths,
    close,
)

pytestmark = KERNEL_MARKS

# --- the primitive against the formula, written with MLX operations ------------------

ACTIVATIONS = {
    "lecun_tanh": lambda x: 1.7159 * mx.tanh(0.666 * x),
    "tanh": mx.tanh,
    "relu": nn.relu,
    "silu": lambda x: x * mx.sigmoid(x),
    "gelu": nn.gelu,
}


def reference_step(projected, h, dt, weights, layout, mode, activation):
    """The chain of kernels.cfc_step's docstring, unit by unit."""
    weights, act = iter(weights), ACTIVATIONS[activation]
    new, start = [], 0
    for index, (n, layers) in enumerate(layout):
        h_u = h[:, start : start + n]
        start += n
        if index == 0:
            pre = projected
        else:
            wx, bx = next(weights), next(weights)
            pre = bx + new[-1] @ wx
        pre = pre + h_u @ next(weights)
        heads = pre
        if layers:
            z = act(pre)
            for _ in range(layers - 1):
                w, b = next(weights), next(weights)
                z = act(b + z @ w)
            w, b = next(weights), next(weights)
            heads = b + z @ w
        if mode == "pure":
            w_tau, a = next(weights), next(weights)
            new.append(-a * mx.exp(-dt * (mx.abs(w_tau) + mx.abs(heads))) * heads + a)
            continue
        ff1, ff2, t_a, t_b = mx.split(heads, 4, axis=-1)
        ff1, ff2, gate = mx.tanh(ff1), mx.tanh(ff2), mx.sigmoid(t_a * dt + t_b)
        new.append(ff1 + gate * ff2 if mode == "no_gate" else ff1 * (1 - gate) + gate * ff2)
    return mx.concatenate(new, axis=-1)


def random_chain(layout, mode, batch, width=7, seed=0):
    """Inputs and weights of kernels.cfc_step for ``layout``, drawn from a seed."""
    rng = np.random.default_rng(seed)

    def uniform(*shape, low=-1.0):
        return mx.array(rng.uniform(low, 1, shape).astype(np.float32))

    weights, previous = [], 0
    for n, layers in layout:
        heads = n if mode == "pure" else 4 * n
        first = width if layers else heads
        if previous:
            weights += [uniform(previous, first), uniform(first)]
        weights.append(uniform(n, first))
        for _ in range(layers - 1):
            weights += [uniform(width, width), uniform(width)]
        if layers:
            weights += [uniform(width, heads), uniform(heads)]
        if mode == "pure":
            weights += [uniform(1, n), uniform(1, n)]
        previous = n
    n, layers = layout[0]
    first = width if layers else (n if mode == "pure" else 4 * n)
    state = sum(n for n, _ in layout)
    dt = uniform(batch, 1, low=0.2)
    return uniform(batch, first), uniform(batch, state), dt, weights


CHAINS = {
    "cell-no-backbone": ([(3, 0)], "default", "lecun_tanh"),
    "ncp-default": ([(5, 0), (4, 0), (2, 0)], "default", "lecun_tanh"),
    "ncp-no-gate": ([(5, 0), (4, 0), (2, 0)], "no_gate", "lecun_tanh"),
    "ncp-pure": ([(5, 0), (3, 0)], "pure", "lecun_tanh"),
    "backbone-lecun": ([(6, 1)], "default", "lecun_tanh"),
    "backbone-tanh-3": ([(6, 3)], "no_gate", "tanh"),
    "backbone-relu": ([(6, 2)], "default", "relu"),
    "backbone-silu": ([(6, 2)], "default", "silu"),
    "backbone-gelu-pure": ([(6, 2)], "pure", "gelu"),
    "mixed-chain": ([(6, 2), (3, 1)], "no_gate", "relu"),
}


def weighted_sum(step, layout, mode, activation, weights):
    def loss(projected, h, dt, *params):
        return (step(projected, h, dt, list(params), layout, mode, activation) * weights).sum()

    return loss


@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("chain", CHAINS)
def test_primitive_matches_the_formula_forward_and_backward(chain, batch):
    layout, mode, activation = CHAINS[chain]
    projected, h, dt, weights = random_chain(layout, mode, batch)
    args = (projected, h, dt, *weights)
    fused = kernels.cfc_step(projected, h, dt, weights, layout, mode, activation)
    close(fused, reference_step(projected, h, dt, weights, layout, mode, activation))
    scale = mx.array(np.random.default_rng(1).standard_normal(fused.shape).astype(np.float32))
    argnums = tuple(range(len(args)))
    ours = mx.grad(weighted_sum(kernels.cfc_step, layout, mode, activation, scale), argnums)
    theirs = mx.grad(weighted_sum(reference_step, layout, mode, activation, scale), argnums)
    for a, b in zip(ours(*args), theirs(*args), strict=True):
        close(a, b)


def step_by_step(projected, h, dt, weights, layout, mode, activation):
    """The states (B, T, N) of a sequence, one kernels.cfc_step at a time."""
    states = []
    for t in range(projected.shape[1]):
        h = kernels.cfc_step(projected[:, t], h, dt[:, t], weights, layout, mode, activation)
        states.append(h)
    return mx.stack(states, axis=1)


def random_sequence(layout, mode, batch, steps, seed=0):
    projected, h, _, weights = random_chain(layout, mode, batch, seed=seed)
    rng = np.random.default_rng(seed + 1)
    sequence = mx.array(rng.standard_normal((batch, steps, projected.shape[1]), np.float32))
    dt = mx.array(rng.uniform(0.2, 2.0, (batch, steps, 1)).astype(np.float32))
    return sequence, h, dt, weights


@pytest.mark.parametrize("keep_cache", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("chain", ["backbone-gelu-pure", "mixed-chain", "ncp-no-gate"])
def test_a_sequence_is_its_steps_forward_and_backward(chain, keep_cache):
    layout, mode, activation = CHAINS[chain]
    # 11 samples: pieces of 8 rows and a remainder; 5 steps.
    projected, h, dt, weights = random_sequence(layout, mode, batch=11, steps=5)
    args = (projected, h, dt, *weights)

    def sequence(projected, h, dt, weights, layout, mode, activation):
        return kernels.cfc_sequence(
            projected, h, dt, weights, layout, mode, activation, keep_cache=keep_cache
        )

    fused = sequence(projected, h, dt, weights, layout, mode, activation)
    close(fused, step_by_step(projected, h, dt, weights, layout, mode, activation))
    scale = mx.array(np.random.default_rng(1).standard_normal(fused.shape).astype(np.float32))
    argnums = tuple(range(len(args)))
    ours = mx.grad(weighted_sum(sequence, layout, mode, activation, scale), argnums)
    theirs = mx.grad(weighted_sum(step_by_step, layout, mode, activation, scale), argnums)
    for a, b in zip(ours(*args), theirs(*args), strict=True):
        close(a, b, tol=2e-5)


def with_memory_step_by_step(projected, h, dt, weights, layout, mode, activation, memory):
    """The states and cells (B, T, N) of a mixed-memory sequence, one kernels.lstm_step
    and one kernels.cfc_step at a time."""
    z, c, wh_t = memory
    states, cells = [], []
    for t in range(projected.shape[1]):
        lstm_h, c = kernels.lstm_step(z[:, t], h, c, wh_t)
        h = kernels.cfc_step(projected[:, t], lstm_h, dt[:, t], weights, layout, mode, activation)
        states.append(h)
        cells.append(c)
    return mx.stack(states, axis=1), mx.stack(cells, axis=1)


@pytest.mark.parametrize("keep_cache", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("chain", ["backbone-lecun", "ncp-pure"])
def test_a_sequence_with_mixed_memory_is_its_steps_forward_and_backward(chain, keep_cache):
    layout, mode, activation = CHAINS[chain]
    projected, h, dt, weights = random_sequence(layout, mode, batch=11, steps=4)
    n = h.shape[1]
    rng = np.random.default_rng(5)
    memory = [
        mx.array(rng.standard_normal(shape).astype(np.float32) * scale)
        for shape, scale in (((11, 4, 4 * n), 1.0), ((11, n), 1.0), ((n, 4 * n), 0.5))
    ]
    scales = [mx.array(rng.standard_normal((11, 4, n)).astype(np.float32)) for _ in range(2)]

    def loss(run):
        def value(projected, h, dt, *rest):
            states, cells = run(projected, h, dt, list(rest[:-3]), layout, mode, activation,
                                rest[-3:])  # fmt: skip
            return (states * scales[0]).sum() + (cells * scales[1]).sum()

        return value

    def fused(projected, h, dt, weights, layout, mode, activation, memory):
        return kernels.cfc_sequence(
            projected, h, dt, weights, layout, mode, activation, keep_cache, tuple(memory)
        )

    args = (projected, h, dt, *weights, *memory)
    for mine, theirs in zip(
        fused(projected, h, dt, weights, layout, mode, activation, memory),
        with_memory_step_by_step(projected, h, dt, weights, layout, mode, activation, memory),
        strict=True,
    ):
        close(mine, theirs)
    argnums = tuple(range(len(args)))
    ours = mx.grad(loss(fused), argnums)(*args)
    expected = mx.grad(loss(with_memory_step_by_step), argnums)(*args)
    for mine, theirs in zip(ours, expected, strict=True):
        close(mine, theirs, tol=2e-5)


def test_a_sequence_reads_broadcast_timespans_and_rejects_wrong_shapes():
    layout, mode, activation = CHAINS["mixed-chain"]
    projected, h, dt, weights = random_sequence(layout, mode, batch=3, steps=4)
    one = mx.broadcast_to(mx.array(0.5).reshape(1, 1, 1), dt.shape)
    close(
        kernels.cfc_sequence(projected, h, one, weights, layout, mode, activation),
        step_by_step(projected, h, mx.full(dt.shape, 0.5), weights, layout, mode, activation),
    )
    with pytest.raises(ValueError, match=r"'dt' must be float32 of shape \(3, 4, 1\)"):
        kernels.cfc_sequence(projected, h, dt[:, :3], weights, layout, mode, activation)
    with pytest.raises(ValueError, match=r"'projected' must be \(B, T, width\)"):
        kernels.cfc_sequence(projected[:, 0], h, dt, weights, layout, mode, activation)
    with pytest.raises(ValueError, match="a sequence needs at least one step"):
        kernels.cfc_sequence(projected[:, :0], h, dt[:, :0], weights, layout, mode, activation)


def test_primitive_compiles_and_reads_strided_and_broadcast_inputs():
    layout, mode, activation = CHAINS["mixed-chain"]
    projected, h, dt, weights = random_chain(layout, mode, batch=4)
    # A time step sliced out of a sequence, a transposed state, a broadcast dt, transposed
    # and broadcast weights.
    sequence = mx.stack([projected * 2, projected], axis=1)
    strided = [sequence[:, 1], mx.array(np.array(h).T).T, mx.broadcast_to(dt[:1], dt.shape)]
    strided_weights = [mx.array(np.array(w).T).T if w.ndim == 2 else w for w in weights]
    expected = reference_step(projected, h, strided[2], weights, layout, mode, activation)
    close(kernels.cfc_step(*strided, strided_weights, layout, mode, activation), expected)
    compiled = mx.compile(
        mx.grad(weighted_sum(kernels.cfc_step, layout, mode, activation, 1.0), argnums=(0, 3))
    )
    eager = mx.grad(weighted_sum(reference_step, layout, mode, activation, 1.0), argnums=(0, 3))
    expected_grads = eager(projected, h, strided[2], *weights)
    for a, b in zip(compiled(*strided, *strided_weights), expected_grads, strict=True):
        close(a, b)


def test_primitive_rejects_what_it_cannot_take():
    layout = [(5, 0), (3, 0)]
    projected, h, dt, weights = random_chain(layout, "default", batch=2)
    step = kernels.cfc_step
    with pytest.raises(ValueError, match=r"weight 3 \(Wh\) must be float32 of shape \(3, 12\)"):
        step(projected, h, dt, [*weights[:3], weights[3][:2]], layout)
    with pytest.raises(ValueError, match=r"weight 2 \(bx\) must be float32 of shape \(12,\)"):
        step(projected, h, dt, [*weights[:2], weights[2][:5], weights[3]], layout)
    with pytest.raises(ValueError, match="missing weight: Wh"):
        step(projected, h, dt, weights[:3], layout)
    with pytest.raises(ValueError, match="1 weights too many"):
        step(projected, h, dt, [*weights, weights[0]], layout)
    with pytest.raises(ValueError, match=r"'h' must be float32 of shape \(2, 8\)"):
        step(projected, h[:, :7], dt, weights, layout)
    with pytest.raises(ValueError, match=r"'dt' must be float32 of shape \(2, 1\)"):
        step(projected, h, mx.ones((2, 3)), weights, layout)
    with pytest.raises(ValueError, match=r"'projected' must be float32 of shape \(2, 20\)"):
        step(projected.astype(mx.float16), h, dt, weights, layout)
    with pytest.raises(ValueError, match="'layout' needs units >= 1"):
        step(projected, h, dt, weights, [(5, 0), (0, 0)])
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        step(projected, h, dt, weights, layout, mode="fast")
    with pytest.raises(ValueError, match="unknown activation 'elu'"):
        step(projected, h, dt, weights, layout, activation="elu")


# --- the cells and layers: fused against MLX operations ------------------------------

MODELS = {
    "fc": lambda: CfC(4, 6, backbone_units=8),
    "fc-2-layers-relu": lambda: CfC(4, 6, backbone_units=8, backbone_layers=2, activation="relu"),
    "fc-no-backbone": lambda: CfC(4, 6, backbone_layers=0),
    "fc-pure": lambda: CfC(4, 6, mode="pure", backbone_units=8),
    "fc-no-gate-gelu": lambda: CfC(4, 6, mode="no_gate", backbone_units=8, activation="gelu"),
    "autoncp": lambda: CfC(4, AutoNCP(12, 3, seed=1)),
    "ncp-pure": lambda: CfC(4, NCP(4, 3, 2, 3, 2, 2, 2, seed=5), mode="pure"),
    "strict": lambda: CfC(4, AutoNCP(10, 2, seed=2), strict_wiring=True),
    "fully-connected-wiring": lambda: CfC(4, FullyConnected(5)),
    "random-wiring": lambda: CfC(4, Random(6, 3, sparsity_level=0.5, random_seed=4)),
}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("call", CALLS)
def test_layer_fused_matches_graph_path(model, call):
    mx.random.seed(0)
    check_layer_on_both_paths(MODELS[model](), call)


@pytest.mark.parametrize("wiring", [None, AutoNCP(10, 2, seed=2)], ids=["fc", "autoncp"])
def test_mixed_memory_and_compiled_training_match_graph_path(wiring):
    def train():
        mx.random.seed(3)
        backbone = {} if wiring else {"backbone_units": 8}
        model = CfC(4, wiring or 8, mixed_memory=True, **backbone)
        step = make_train_step(model, optim.Adam(learning_rate=1e-2), nn.losses.mse_loss)
        x, y = mx.random.normal((4, 8, 4)), mx.random.normal((4, 8, model.output_size))
        losses = [step(x, y) for _ in range(3)]
        return losses + [p for _, p in tree_flatten(model.parameters())]

    fused, graph = both_paths(train)
    for a, b in zip(fused, graph, strict=True):
        close(a, b, tol=2e-5)


@pytest.mark.parametrize(
    "make",
    [lambda: CfCCell(3, 5, backbone_units=6), lambda: WiredCfCCell(3, AutoNCP(8, 2, seed=0))],
    ids=["cell", "wired"],
)
def test_cell_call_one_step_matches_graph_path(make):
    cell = make()
    x, h = mx.random.normal((2, 3)), mx.random.normal((2, cell.state_size))
    for dt in (0.7, mx.array([[0.5], [1.5]])):
        fused, graph = both_paths(lambda dt=dt: cell(x, h, dt))
        for a, b in zip(fused, graph, strict=True):
            close(a, b)


def test_dropout_in_training_takes_the_graph_path():
    cell = CfCCell(3, 5, backbone_units=6, backbone_dropout=0.3)
    assert kernels.graph_stepper(cell) is None  # modules start in training mode
    cell.eval()
    assert kernels.graph_stepper(cell) is not None


def test_float16_takes_the_graph_path():
    cell = WiredCfCCell(3, AutoNCP(8, 2, seed=0))
    cell.set_dtype(mx.float16)
    assert kernels.graph_stepper(cell) is None
    with kernels.disabled():
        assert kernels.graph_stepper(CfCCell(3, 5)) is None
