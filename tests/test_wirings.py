"""Tests of ncps_mlx.wirings: bit-identity with ncps 1.0.1, the fixed defects, validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ncps_mlx.errors import WiringError
from ncps_mlx.wirings import NCP, AutoNCP, FullyConnected, Random, Wiring

FIXTURE = Path(__file__).parent / "fixtures" / "wirings_reference.npz"
CLASSES = {c.__name__: c for c in (Wiring, FullyConnected, Random, NCP, AutoNCP)}
SEEDS = list(range(24))
# (inter, command, motor, sensory_fanout, inter_fanout, recurrent_command_synapses,
# motor_fanin): AutoNCP-like, fix-up heavy, more command than inter neurons, minimal, and
# one where the reference caps the command fix-up fan-in by the command count.
NCP_ARGS = [
    (12, 8, 4, 6, 4, 6, 4),
    (10, 3, 2, 1, 1, 0, 1),
    (3, 9, 2, 2, 4, 5, 3),
    (1, 1, 1, 1, 1, 1, 1),
    (20, 6, 5, 3, 2, 12, 2),
    (6, 2, 1, 1, 1, 0, 1),  # seeds 19 and 35 hit the odd fix-up cap of the reference
]
# A fanout or fan-in of 0, which the reference accepts: the issue's case (38 synapses),
# all three at 0, and each alone. The fix-up then draws the whole phase.
NCP_ZERO_FANOUT_ARGS = [
    (10, 8, 6, 3, 3, 0, 0),
    (10, 8, 6, 0, 0, 0, 0),
    (6, 4, 3, 0, 2, 2, 1),
    (5, 3, 2, 2, 0, 1, 2),
    (4, 4, 3, 2, 2, 3, 0),
]


def _load_fixture() -> tuple[dict, list[dict]]:
    with np.load(FIXTURE, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return arrays, json.loads(str(arrays["cases"]))


FIXTURE_ARRAYS, FIXTURE_CASES = _load_fixture()


def _reference():
    return pytest.importorskip(
        "ncps.wirings", reason="reference package ncps not installed", exc_type=ImportError
    )


def _assert_same_wiring(ours: Wiring, ref, input_dim: int) -> None:
    ours.build(input_dim)
    ref.build(input_dim)
    assert ours.adjacency_matrix.dtype == np.int32
    np.testing.assert_array_equal(ours.adjacency_matrix, ref.adjacency_matrix)
    np.testing.assert_array_equal(ours.sensory_adjacency_matrix, ref.sensory_adjacency_matrix)
    assert ours.output_dim == ref.output_dim
    assert ours.num_layers == ref.num_layers
    for layer in range(ours.num_layers):
        assert ours.get_neurons_of_layer(layer) == list(ref.get_neurons_of_layer(layer))
    assert [ours.get_type_of_neuron(i) for i in range(ours.units)] == [
        ref.get_type_of_neuron(i) for i in range(ref.units)
    ]


# -- bit-identity with the reference ---------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("units,output_size", [(8, 1), (19, 5), (32, 4), (64, 8)])
@pytest.mark.parametrize("sparsity_level", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("input_dim", [1, 20])
def test_autoncp_matches_reference(seed, units, output_size, sparsity_level, input_dim):
    ref = _reference().AutoNCP(units, output_size, sparsity_level, seed=seed)
    ours = AutoNCP(units, output_size, sparsity_level, seed=seed)
    _assert_same_wiring(ours, ref, input_dim)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("args", NCP_ARGS)
@pytest.mark.parametrize("input_dim", [1, 2, 16])
def test_ncp_matches_reference(seed, args, input_dim):
    _assert_same_wiring(NCP(*args, seed=seed), _reference().NCP(*args, seed=seed), input_dim)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("args", NCP_ZERO_FANOUT_ARGS)
@pytest.mark.parametrize("input_dim", [1, 3, 16])
def test_ncp_with_zero_fanout_matches_reference(seed, args, input_dim):
    _assert_same_wiring(NCP(*args, seed=seed), _reference().NCP(*args, seed=seed), input_dim)


def test_ncp_with_zero_fanout_builds_the_issues_wiring():
    wiring = NCP(10, 8, 6, 3, 3, 0, 0)
    wiring.build(3)
    assert (wiring.synapse_count, wiring.sensory_synapse_count) == (38, 13)
    command_to_motor = wiring.adjacency_matrix[6:14, :6]
    # motor_fanin=0: each command neuron feeds exactly one motor neuron (the fix-up), and
    # here motor neuron 0 reads none (as docs/guide/wirings.md says).
    assert np.count_nonzero(command_to_motor, axis=1).tolist() == [1] * 8
    assert np.count_nonzero(command_to_motor, axis=0).tolist() == [0, 1, 2, 2, 2, 1]
    assert np.count_nonzero(wiring.adjacency_matrix[6:14, 6:14]) == 0  # no recurrent draws


@pytest.mark.parametrize(
    "name,fix_up",
    [
        ("sensory_fanout", lambda w: w.sensory_adjacency_matrix[:, 10:]),
        ("inter_fanout", lambda w: w.adjacency_matrix[10:, 4:10]),
    ],
)
def test_ncp_with_zero_fanout_gives_each_neuron_of_the_next_layer_one_synapse(name, fix_up):
    wiring = _ncp(inter_neurons=10, command_neurons=6, motor_neurons=4, **{name: 0})
    wiring.build(5)
    assert np.count_nonzero(fix_up(wiring), axis=0).tolist() == [1] * fix_up(wiring).shape[1]


# Larger and edge NCP builds, as (class, constructor args, seed, input_dim). Between them
# every fix-up phase runs, and the capped command fix-up runs (checked by the coverage test
# below, so a change of the draws cannot silently drop these paths).
NCP_BUILDS = [
    *[
        (AutoNCP, (units, output_size, sparsity), seed, input_dim)
        for units, output_size, input_dim in [(5, 1, 1), (50, 8, 3), (300, 20, 4)]
        for sparsity in (0.1, 0.3, 0.5, 0.7, 0.9)
        for seed in (0, 7)
    ],
    *[(AutoNCP, (1000, 30, sparsity), seed, 4) for seed, sparsity in enumerate((0.1, 0.5, 0.9))],
    # Cap binds (int(9 * 2 / 3) > 3) and these seeds leave a command neuron for the fix-up.
    *[(AutoNCP, (10, 1, 0.1), seed, 3) for seed in (43, 239)],
    *[(NCP, NCP_ARGS[5], seed, 2) for seed in (19, 45)],
    # Explicit arguments: command-heavy with a sparse inter fanout (long command fix-up),
    # AutoNCP-like but larger fanouts, and an inter layer feeding few command neurons where
    # these seeds run the capped command fix-up (int(24 * 1 / 4) > 4).
    (NCP, (100, 400, 20, 10, 3, 50, 5), 3, 8),
    (NCP, (400, 200, 30, 40, 20, 150, 25), 11, 16),
    *[(NCP, (24, 4, 3, 6, 1, 5, 2), seed, 5) for seed in (10, 207)],
]


def _build_id(build) -> str:
    cls, args, seed, input_dim = build
    return f"{cls.__name__}{args}-seed{seed}-in{input_dim}"


@pytest.mark.parametrize("build", NCP_BUILDS, ids=[_build_id(b) for b in NCP_BUILDS])
def test_ncp_builds_match_reference(build):
    cls, args, seed, input_dim = build
    ref = getattr(_reference(), cls.__name__)(*args, seed=seed)
    _assert_same_wiring(cls(*args, seed=seed), ref, input_dim)


def _fixup_synapses(wiring: NCP) -> tuple[int, int, int]:
    """Synapses added by the (sensory, command, motor) fix-ups: the main phases add exactly
    fanout (fan-in) synapses per anchor, and the fix-ups only add pairs never drawn before."""
    inter, command, motor = (wiring.get_neurons_of_layer(i) for i in range(3))
    adjacency = wiring.adjacency_matrix
    sensory = wiring.sensory_synapse_count - wiring.input_dim * wiring._sensory_fanout
    to_command = np.count_nonzero(adjacency[np.ix_(inter, command)])
    to_motor = np.count_nonzero(adjacency[np.ix_(command, motor)])
    return (
        sensory,
        int(to_command) - len(inter) * wiring._inter_fanout,
        int(to_motor) - len(motor) * wiring._motor_fanin,
    )


def test_ncp_builds_cover_every_fixup_and_the_cap():
    runs = {"sensory": False, "command": False, "motor": False, "capped command": False}
    for cls, args, seed, input_dim in NCP_BUILDS:
        wiring = cls(*args, seed=seed)
        wiring.build(input_dim)
        sensory, command, motor = _fixup_synapses(wiring)
        num_inter, num_command = (len(wiring.get_neurons_of_layer(i)) for i in range(2))
        capped = int(num_inter * wiring._inter_fanout / num_command) > num_command
        runs["sensory"] |= sensory > 0
        runs["command"] |= command > 0
        runs["motor"] |= motor > 0
        runs["capped command"] |= capped and command > 0
    assert all(runs.values()), runs


class _CountingRng:
    """Forwards to a RandomState and counts the draw calls."""

    def __init__(self, rng: np.random.RandomState) -> None:
        self.rng, self.calls = rng, 0

    def __getattr__(self, name: str):
        method = getattr(self.rng, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return method(*args, **kwargs)

        return counted


def test_ncp_build_draws_per_neuron_not_per_synapse():
    wiring, plain = AutoNCP(300, 10, seed=1), AutoNCP(300, 10, seed=1)
    wiring._rng = counting = _CountingRng(wiring._rng)
    wiring.build(20)
    plain.build(20)
    np.testing.assert_array_equal(wiring.adjacency_matrix, plain.adjacency_matrix)
    np.testing.assert_array_equal(wiring.sensory_adjacency_matrix, plain.sensory_adjacency_matrix)
    # Two draws per anchor and per fixed-up partner of each phase (at most input_dim + 2 *
    # units of them), three per recurrent command synapse; none per synapse.
    bound = 2 * (20 + 2 * wiring.units) + 3 * wiring._recurrent_command_synapses
    assert counting.calls <= bound < (wiring.synapse_count + wiring.sensory_synapse_count) / 5


@pytest.mark.parametrize("seed", SEEDS[:20])
@pytest.mark.parametrize("units,output_dim", [(1, None), (5, 2), (16, 16)])
@pytest.mark.parametrize("self_connections", [True, False])
@pytest.mark.parametrize("input_dim", [1, 7])
def test_fully_connected_matches_reference(seed, units, output_dim, self_connections, input_dim):
    ref = _reference().FullyConnected(units, output_dim, seed, self_connections)
    ours = FullyConnected(units, output_dim, seed, self_connections)
    _assert_same_wiring(ours, ref, input_dim)


@pytest.mark.parametrize("seed", SEEDS[:20])
@pytest.mark.parametrize("units,output_dim", [(1, None), (6, 2), (16, 5)])
@pytest.mark.parametrize("sparsity_level", [0.0, 0.3, 0.75, 0.99])
@pytest.mark.parametrize("input_dim", [1, 9])
def test_random_matches_reference(seed, units, output_dim, sparsity_level, input_dim):
    ref = _reference().Random(units, output_dim, sparsity_level, seed)
    ours = Random(units, output_dim, sparsity_level, seed)
    _assert_same_wiring(ours, ref, input_dim)


@pytest.mark.parametrize("case", FIXTURE_CASES, ids=[c["id"] for c in FIXTURE_CASES])
def test_matches_committed_reference_fixture(case):
    wiring = CLASSES[case["class_name"]](**case["args"])
    wiring.build(case["input_dim"])
    adjacency = FIXTURE_ARRAYS[case["id"] + ":adjacency"]
    sensory = FIXTURE_ARRAYS[case["id"] + ":sensory"]
    np.testing.assert_array_equal(wiring.adjacency_matrix, adjacency.astype(np.int32))
    np.testing.assert_array_equal(wiring.sensory_adjacency_matrix, sensory.astype(np.int32))


def test_fixture_covers_every_class_and_stays_small():
    names = {c["class_name"] for c in FIXTURE_CASES}
    assert names == {"AutoNCP", "NCP", "FullyConnected", "Random"}
    ncp_args = [c["args"] for c in FIXTURE_CASES if c["class_name"] == "NCP"]
    for fanout in ("sensory_fanout", "inter_fanout", "motor_fanin"):
        assert any(args[fanout] == 0 for args in ncp_args), fanout
    assert FIXTURE.stat().st_size < 300_000


def test_module_imports_neither_mlx_nor_matplotlib():
    import ast

    import ncps_mlx.wirings

    tree = ast.parse(Path(ncps_mlx.wirings.__file__).read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top_level for a in n.names] + [
        n.module for n in top_level if isinstance(n, ast.ImportFrom)
    ]
    assert not [n for n in names if n and n.split(".")[0] in {"mlx", "matplotlib"}]


def test_autoncp_32_4_known_sizes():
    wiring = AutoNCP(32, 4)
    wiring.build(20)
    assert wiring.layer_sizes == [17, 11, 4]
    assert wiring.neuron_counts == {"sensory": 20, "inter": 17, "command": 11, "motor": 4}
    assert wiring.synapse_count == 117
    assert wiring.sensory_synapse_count == 160


# -- build is idempotent ---------------------------------------------------------------------

FACTORIES = {
    "FullyConnected": lambda: FullyConnected(6, 2, self_connections=False),
    "Random": lambda: Random(7, 3, sparsity_level=0.4),
    "NCP": lambda: NCP(*NCP_ARGS[0]),
    "AutoNCP": lambda: AutoNCP(20, 3, 0.6, seed=5),
}


def _custom_wiring() -> Wiring:
    wiring = Wiring(4)
    wiring.set_output_dim(1)
    for src, dest, polarity in [(0, 1, 1), (1, 2, -1), (2, 2, 1), (3, 0, -1)]:
        wiring.add_synapse(src, dest, polarity)
    wiring.build(3)
    wiring.add_sensory_synapse(0, 3, 1)
    wiring.add_sensory_synapse(2, 1, -1)
    return wiring


@pytest.mark.parametrize("name", list(FACTORIES))
def test_build_again_with_same_input_dim_changes_nothing(name):
    wiring, fresh = FACTORIES[name](), FACTORIES[name]()
    wiring.build(5)
    fresh.build(5)
    wiring.build(5)
    np.testing.assert_array_equal(wiring.adjacency_matrix, fresh.adjacency_matrix)
    np.testing.assert_array_equal(wiring.sensory_adjacency_matrix, fresh.sensory_adjacency_matrix)
    assert wiring.input_dim == 5


@pytest.mark.parametrize("name", list(FACTORIES))
def test_build_with_other_input_dim_raises(name):
    wiring = FACTORIES[name]()
    wiring.build(5)
    with pytest.raises(WiringError, match=r"input_dim=5.*input_dim=8"):
        wiring.build(8)
    assert wiring.input_dim == 5 and wiring.sensory_adjacency_matrix.shape[0] == 5


def test_wiring_shared_by_two_models_is_unchanged():
    wiring = AutoNCP(24, 4, seed=3)
    views = []
    for _ in range(2):  # what each model does: build, then copy the matrices it needs
        wiring.build(6)
        erev, sensory = wiring.erev_initializer(), wiring.sensory_erev_initializer()
        views.append((erev.copy(), sensory.copy()))
        erev[:] = 0  # a model editing its own copy must not edit the wiring
        sensory[:] = 0
    np.testing.assert_array_equal(views[0][0], views[1][0])
    np.testing.assert_array_equal(views[0][1], views[1][1])
    np.testing.assert_array_equal(wiring.adjacency_matrix, views[0][0])
    assert wiring.synapse_count > 0 and wiring.sensory_synapse_count > 0


def test_reference_rebuild_defect_is_fixed():
    ref = _reference().FullyConnected(4)
    ref.build(3)
    first = ref.sensory_adjacency_matrix.copy()
    ref.build(3)  # the reference draws the sensory synapses again
    assert not np.array_equal(first, ref.sensory_adjacency_matrix)
    ours = FullyConnected(4)
    ours.build(3)
    np.testing.assert_array_equal(ours.sensory_adjacency_matrix, first)
    ours.build(3)
    np.testing.assert_array_equal(ours.sensory_adjacency_matrix, first)


# -- configs ---------------------------------------------------------------------------------


def _round_trip(wiring: Wiring, via: type[Wiring]) -> Wiring:
    config = json.loads(json.dumps(wiring.get_config()))
    assert config["class_name"] == type(wiring).__name__
    assert config["input_dim"] == wiring.input_dim
    restored = via.from_config(config)
    assert type(restored) is type(wiring)
    assert restored.get_config() == config
    np.testing.assert_array_equal(restored.adjacency_matrix, wiring.adjacency_matrix)
    if wiring.is_built():
        np.testing.assert_array_equal(
            restored.sensory_adjacency_matrix, wiring.sensory_adjacency_matrix
        )
    else:
        assert restored.sensory_adjacency_matrix is None
    return restored


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("built", [True, False])
@pytest.mark.parametrize("via_base", [True, False])
def test_config_round_trip(name, built, via_base):
    wiring = FACTORIES[name]()
    if built:
        wiring.build(9)
    restored = _round_trip(wiring, Wiring if via_base else type(wiring))
    if not built:  # building later must still give the original's draws
        wiring.build(4)
        restored.build(4)
        np.testing.assert_array_equal(
            restored.sensory_adjacency_matrix, wiring.sensory_adjacency_matrix
        )


def test_ncp_config_holds_constructor_arguments():
    config = NCP(*NCP_ARGS[2], seed=99).get_config()
    assert config == {
        "class_name": "NCP",
        "inter_neurons": 3,
        "command_neurons": 9,
        "motor_neurons": 2,
        "sensory_fanout": 2,
        "inter_fanout": 4,
        "recurrent_command_synapses": 5,
        "motor_fanin": 3,
        "seed": 99,
        "input_dim": None,
    }
    assert AutoNCP(16, 2, 0.3, seed=4).get_config() == {
        "class_name": "AutoNCP",
        "units": 16,
        "output_size": 2,
        "sparsity_level": 0.3,
        "seed": 4,
        "input_dim": None,
    }


@pytest.mark.parametrize("built", [True, False])
def test_custom_wiring_round_trip(built):
    wiring = _custom_wiring() if built else Wiring(3)
    restored = _round_trip(wiring, Wiring)
    assert restored.output_dim == wiring.output_dim
    if built:
        assert restored.synapse_count == 4 and restored.sensory_synapse_count == 2


@pytest.mark.parametrize("name", ["FullyConnected", "Random", "AutoNCP"])
def test_from_config_accepts_reference_configs(name):
    ref = getattr(_reference(), name)(*{"AutoNCP": (12, 2)}.get(name, (5,)))
    ours = CLASSES[name].from_config(ref.get_config())  # no class_name, no input_dim
    _assert_same_wiring(ours, ref, 3)


@pytest.mark.parametrize(
    "via,config,match",
    [
        (Wiring, {"class_name": "Spiral", "units": 3}, r"class_name='Spiral'.*'NCP'"),
        (FullyConnected, AutoNCP(8, 1).get_config(), r"\[FullyConnected\].*'AutoNCP'"),
        (Wiring, {**Wiring(2).get_config(), "adjacency_matrix": [[0]]}, r"shape \(2, 2\)"),
        (Wiring, {**Wiring(2).get_config(), "adjacency_matrix": [[0, 2], [0, 0]]}, "-1, 0"),
        (Wiring, {**_custom_wiring().get_config(), "input_dim": None}, "no input_dim"),
        (Wiring, {**_custom_wiring().get_config(), "input_dim": 2}, r"shape \(2, 4\)"),
    ],
)
def test_from_config_rejects_bad_configs(via, config, match):
    with pytest.raises(WiringError, match=match):
        via.from_config(config)


# -- structure and counts --------------------------------------------------------------------


def test_ncp_neuron_kinds_and_layers():
    wiring = NCP(3, 4, 2, 2, 2, 1, 2)
    assert [wiring.get_type_of_neuron(i) for i in range(9)] == (
        ["motor"] * 2 + ["command"] * 4 + ["inter"] * 3
    )
    assert [wiring.get_neurons_of_layer(i) for i in range(3)] == [[6, 7, 8], [2, 3, 4, 5], [0, 1]]
    assert wiring.num_layers == 3 and wiring.layer_sizes == [3, 4, 2]
    assert wiring.neuron_counts == {"sensory": None, "inter": 3, "command": 4, "motor": 2}
    wiring.build(5)
    sensory_rows = np.abs(wiring.sensory_adjacency_matrix)
    assert sensory_rows[:, :6].sum() == 0  # inputs reach inter neurons only
    assert np.all(sensory_rows[:, 6:].sum(axis=1) == 2)  # sensory_fanout each
    assert np.abs(wiring.adjacency_matrix)[:2].sum() == 0  # motor neurons are sinks
    assert np.abs(wiring.adjacency_matrix)[:, :6].any(axis=0).all()  # motor, command fed


def test_flat_wiring_kinds_and_layers():
    wiring = FullyConnected(5, output_dim=2)
    assert [wiring.get_type_of_neuron(i) for i in range(5)] == ["motor"] * 2 + ["inter"] * 3
    assert wiring.num_layers == 1 and wiring.get_neurons_of_layer(0) == [0, 1, 2, 3, 4]
    assert wiring.layer_sizes == [5]
    assert wiring.neuron_counts == {"sensory": None, "inter": 3, "command": 0, "motor": 2}


@pytest.mark.parametrize(
    "wiring,internal,sensory",
    [
        (FullyConnected(5, self_connections=False), 20, 15),
        (FullyConnected(5), 25, 15),
        (Random(10, sparsity_level=0.3), 70, 21),  # round(n * 0.7) of 100 and of 30 pairs
        (Random(10, sparsity_level=0.0), 100, 30),
    ],
)
def test_synapse_counts(wiring, internal, sensory):
    wiring.build(3)
    assert wiring.synapse_count == internal
    assert wiring.sensory_synapse_count == sensory
    assert set(np.unique(wiring.adjacency_matrix)) <= {-1, 0, 1}


def test_initializers_are_copies():
    wiring = _custom_wiring()
    erev = wiring.erev_initializer()
    assert erev.dtype == np.int32
    erev[0, 1] = -1
    assert wiring.adjacency_matrix[0, 1] == 1
    np.testing.assert_array_equal(
        wiring.sensory_erev_initializer(), wiring.sensory_adjacency_matrix
    )


# -- validation ------------------------------------------------------------------------------

NCP_KEYS = (
    "inter_neurons",
    "command_neurons",
    "motor_neurons",
    "sensory_fanout",
    "inter_fanout",
    "recurrent_command_synapses",
    "motor_fanin",
)


def _ncp(**changes):
    return NCP(**{**dict(zip(NCP_KEYS, NCP_ARGS[0], strict=True)), **changes})


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: Wiring(0), r"\[Wiring\] 'units' must be an int >= 1 but got 0"),
        (lambda: Wiring(2.5), r"'units' must be an int >= 1 but got 2.5"),
        (lambda: Wiring(True), r"'units' must be an int >= 1 but got True"),
        (lambda: FullyConnected(4, output_dim=5), r"\[FullyConnected\] 'output_dim'.*1\.\.4.*5"),
        (lambda: FullyConnected(4, output_dim=0), r"'output_dim' must be an int in 1\.\.4"),
        (lambda: FullyConnected(4, erev_init_seed=-1), r"'erev_init_seed'.*>= 0 but got -1"),
        (lambda: FullyConnected(4, erev_init_seed=None), r"'erev_init_seed'.*got None"),
        (lambda: FullyConnected(4, self_connections="no"), r"'self_connections'.*bool.*'no'"),
        (lambda: Random(4, sparsity_level=1.0), r"\[Random\] 'sparsity_level'.*\[0, 1\).*1.0"),
        (lambda: Random(4, sparsity_level=-0.1), r"'sparsity_level' must be a number in \[0, 1\)"),
        (
            lambda: Random(4, sparsity_level="0.5"),
            r"'sparsity_level' must be a number in \[0, 1\) but got '0.5'",
        ),
        (lambda: Random(4, output_dim=7), r"\[Random\] 'output_dim'.*1\.\.4 but got 7"),
        (lambda: Random(4, random_seed=1.5), r"'random_seed' must be an int >= 0 but got 1.5"),
        (lambda: _ncp(inter_neurons=0), r"\[NCP\] 'inter_neurons' must be an int >= 1"),
        (lambda: _ncp(motor_neurons=-2), r"\[NCP\] 'motor_neurons' must be an int >= 1"),
        (lambda: _ncp(sensory_fanout=13), r"'sensory_fanout' is 13 but there are only 12 inter"),
        (lambda: _ncp(sensory_fanout=-1), r"'sensory_fanout' must be an int in 0\.\.12 but got -1"),
        (lambda: _ncp(inter_fanout=-1), r"'inter_fanout' must be an int in 0\.\.8 but got -1"),
        (lambda: _ncp(motor_fanin=2.0), r"'motor_fanin' must be an int in 0\.\.8 but got 2.0"),
        (lambda: _ncp(sensory_fanout=True), r"'sensory_fanout' must be an int in 0\.\.12"),
        (lambda: _ncp(motor_neurons=0), r"\[NCP\] 'motor_neurons' must be an int >= 1 but got 0"),
        (lambda: _ncp(inter_fanout=9), r"'inter_fanout' is 9 but there are only 8 command"),
        (lambda: _ncp(motor_fanin=9), r"'motor_fanin' is 9 but there are only 8 command.*0\.\.8"),
        (lambda: _ncp(recurrent_command_synapses=-1), r"'recurrent_command_synapses'.*>= 0"),
        (lambda: _ncp(seed=2**32), r"\[NCP\] 'seed' must be an int in 0\.\.4294967295"),
        (lambda: AutoNCP(32, 30), r"output_size=30 with units=32"),
        (lambda: AutoNCP(5, 3), r"'output_size' must be less than units - 2"),
        (lambda: AutoNCP(32, 0), r"\[AutoNCP\] 'output_size' must be an int >= 1 but got 0"),
        (
            lambda: AutoNCP(32, 4, 0.05),
            r"'sparsity_level' must be a number in \[0.1, 1\] but got 0.05",
        ),
        (lambda: AutoNCP(32, 4, 1.01), r"must be a number in \[0.1, 1\] but got 1.01"),
        (lambda: AutoNCP(32, 4, seed=-3), r"\[AutoNCP\] 'seed' must be an int in 0\.\.4294967295"),
    ],
)
def test_constructor_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("sparsity_level", [0.1, 1.0])
def test_autoncp_sparsity_bounds_are_accepted(sparsity_level):
    wiring = AutoNCP(10, 2, sparsity_level)
    wiring.build(2)
    assert wiring.synapse_count > 0


@pytest.mark.parametrize(
    "action,error,match",
    [
        (lambda w: w.add_synapse(4, 0, 1), ValueError, r"\[Wiring\].*in 4.*only 4 units"),
        (lambda w: w.add_synapse(-1, 0, 1), ValueError, r"originating in -1"),
        (lambda w: w.add_synapse(0, 9, 1), ValueError, r"feeding into 9.*only 4 units"),
        (lambda w: w.add_synapse(0, 1, 0), ValueError, r"polarity 0 \(expected -1 or \+1\)"),
        (lambda w: w.add_synapse(0, 1, 2), ValueError, r"polarity 2"),
        (lambda w: w.add_sensory_synapse(0, 1, 1), WiringError, r"add_sensory_synapse.*build"),
        (lambda w: w.sensory_erev_initializer(), WiringError, r"needs a built wiring"),
        (lambda w: w.sensory_synapse_count, WiringError, r"sensory_synapse_count.*build"),
        (lambda w: w.draw(), WiringError, r"\[Wiring\] draw\(\) needs a built wiring"),
        (lambda w: w.build(0), ValueError, r"'input_dim' must be an int >= 1 but got 0"),
        (lambda w: w.build(2.0), ValueError, r"'input_dim' must be an int >= 1 but got 2.0"),
        (lambda w: w.get_neurons_of_layer(1), ValueError, r"'layer_id' must be an int in 0\.\.0"),
        (lambda w: w.get_type_of_neuron(4), ValueError, r"'neuron_id' must be an int in 0\.\.3"),
        (lambda w: w.set_output_dim(5), ValueError, r"'output_dim' must be an int in 1\.\.4"),
    ],
)
def test_misuse_of_unbuilt_wiring(action, error, match):
    with pytest.raises(error, match=match):
        action(Wiring(4))


def test_sensory_synapse_errors_name_the_input_size():
    wiring = NCP(*NCP_ARGS[3])
    wiring.build(2)
    with pytest.raises(ValueError, match=r"\[NCP\].*originating in 2.*only 2 input features"):
        wiring.add_sensory_synapse(2, 0, 1)
    with pytest.raises(ValueError, match=r"\[NCP\].*feeding into 3.*only 3 units"):
        wiring.add_sensory_synapse(0, 3, 1)
    with pytest.raises(ValueError, match=r"\[NCP\] 'layer_id' must be an int in 0\.\.2"):
        wiring.get_neurons_of_layer(3)


def test_wiring_error_is_a_value_error():
    wiring = Wiring(2)
    wiring.build(1)
    with pytest.raises(ValueError):
        wiring.build(2)


# -- drawing ---------------------------------------------------------------------------------


@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib not installed")
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    yield pyplot
    pyplot.close("all")


@pytest.mark.parametrize("name", ["AutoNCP", "FullyConnected", "custom"])
def test_draw_shows_every_synapse(plt, name):
    from matplotlib.text import Annotation

    wiring = _custom_wiring() if name == "custom" else FACTORIES[name]()
    wiring.build(3)
    self_loops = int(np.count_nonzero(np.diag(wiring.adjacency_matrix)))
    _, ax = plt.subplots()
    returned = wiring.draw(ax, draw_labels=True, synapse_colors="black")
    assert returned is ax
    arrows = [t for t in ax.texts if isinstance(t, Annotation)]
    expected = wiring.synapse_count + wiring.sensory_synapse_count - self_loops
    assert len(arrows) == expected
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    kinds = [k for k, n in wiring.neuron_counts.items() if n]
    ring = ["synapse onto itself"] if self_loops else []
    assert legend == [*kinds, "synapse", *ring]  # one colour for both polarities: one entry


def test_draw_creates_axes_and_colours_by_polarity(plt):
    from matplotlib.colors import to_rgba
    from matplotlib.text import Annotation

    wiring = _custom_wiring()
    ax = wiring.draw(legend=False)
    assert ax.get_legend() is None
    arrows = [t for t in ax.texts if isinstance(t, Annotation)]
    colours = {to_rgba(t.arrow_patch.get_edgecolor(), 1.0) for t in arrows}
    assert colours == {to_rgba("tab:green"), to_rgba("tab:red")}


def test_draw_legend_names_each_synapse_colour_and_neuron_kind(plt):
    from matplotlib.colors import to_rgba

    wiring = _custom_wiring()  # both polarities and a neuron (2) synapsing onto itself
    legend = wiring.draw(synapse_colors={"inhibitory": "purple"}).get_legend()
    entries = {
        t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }
    kinds = [k for k, n in wiring.neuron_counts.items() if n]
    synapses = ["excitatory synapse", "inhibitory synapse", "synapse onto itself"]
    assert list(entries) == kinds + synapses
    assert to_rgba(entries["excitatory synapse"].get_color()) == to_rgba("tab:green")
    assert to_rgba(entries["inhibitory synapse"].get_color()) == to_rgba("purple")
    # Only the polarities the wiring has get an entry.
    excitatory_only = FullyConnected(3, erev_init_seed=0)
    excitatory_only.build(2)
    excitatory_only.adjacency_matrix[:] = np.abs(excitatory_only.adjacency_matrix)
    excitatory_only.sensory_adjacency_matrix[:] = 1
    texts = [t.get_text() for t in excitatory_only.draw().get_legend().get_texts()]
    assert "excitatory synapse" in texts and "inhibitory synapse" not in texts
