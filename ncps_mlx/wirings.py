"""Wiring graphs: which neuron may talk to which, and with what sign.

A wiring holds two integer matrices with entries -1 (inhibitory), 0 (no synapse) and +1
(excitatory), both indexed ``[source, destination]``:

* ``adjacency_matrix`` (units x units) between the neurons of the cell,
* ``sensory_adjacency_matrix`` (input_dim x units) from the input features, created by
  [`Wiring.build`][ncps_mlx.wirings.Wiring.build] once the number of input features is known.

Neurons with ids below ``output_dim`` are motor neurons: the models read their outputs there.
This module is pure numpy; the seeded generators reproduce the matrices of the reference
package ``ncps`` 1.0.1 bit for bit.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ncps_mlx._checks import check_int, check_number
from ncps_mlx.errors import WiringError, see

KINDS = ("sensory", "inter", "command", "motor")
"""The kinds of neuron, from the input to the output: the keys of
[`Wiring.neuron_counts`][ncps_mlx.wirings.Wiring.neuron_counts] (sensory ones are the input
features)."""


def _check_fanout(owner: str, name: str, value: Any, pool: int, pool_name: str) -> int:
    # 0 is allowed, as in the reference: the fix-up of the build then gives every neuron of
    # the pool one synapse from (or to) a random neuron of the other layer.
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > pool:
        raise ValueError(
            f"[{owner}] '{name}' is {value} but there are only {pool} {pool_name} neurons "
            f"(allowed: 0..{pool})"
        )
    return check_int(owner, name, value, 0, pool)


class Wiring:
    """A custom wiring: start empty and add synapses one by one.

    Subclasses generate the synapses themselves; this base class also serves for
    hand-made graphs. Call [`set_output_dim`][ncps_mlx.wirings.Wiring.set_output_dim] to declare the
    motor neurons, add synapses with [`add_synapse`][ncps_mlx.wirings.Wiring.add_synapse], call
    [`build`][ncps_mlx.wirings.Wiring.build] with the number of input features (the models do this
    for you) and add sensory synapses with
    [`add_sensory_synapse`][ncps_mlx.wirings.Wiring.add_sensory_synapse].

    Args:
        units (int): Number of neurons (the state size of the cell).
    """

    def __init__(self, units: int) -> None:
        self.units = check_int(type(self).__name__, "units", units, 1)
        self.adjacency_matrix = np.zeros((self.units, self.units), dtype=np.int32)
        self.sensory_adjacency_matrix: np.ndarray | None = None
        self.input_dim: int | None = None
        self.output_dim: int | None = None

    def set_output_dim(self, output_dim: int) -> None:
        """Declares neurons ``0..output_dim-1`` as the motor (output) neurons.

        Args:
            output_dim (int): Number of motor neurons, between 1 and ``units``.
        """
        self.output_dim = check_int(type(self).__name__, "output_dim", output_dim, 1, self.units)

    def is_built(self) -> bool:
        """Whether [`build`][ncps_mlx.wirings.Wiring.build] has fixed the number of input
        features."""
        return self.input_dim is not None

    def build(self, input_dim: int) -> None:
        """Creates the sensory synapses for ``input_dim`` input features.

        Building is idempotent: a second call with the same ``input_dim`` changes nothing,
        so one wiring object can be shared by several models.

        Args:
            input_dim (int): Number of input features (sensory neurons).

        Raises:
            WiringError: If the wiring was already built for a different ``input_dim``.
        """
        input_dim = check_int(type(self).__name__, "input_dim", input_dim, 1)
        if self.input_dim is not None:
            if self.input_dim != input_dim:
                raise WiringError(
                    f"[{type(self).__name__}] wiring was built for input_dim={self.input_dim} "
                    f"and cannot be rebuilt for input_dim={input_dim}; create a new wiring "
                    f"for the other input size\n{see('wiring-input-size')}"
                )
            return
        self.input_dim = input_dim
        self.sensory_adjacency_matrix = np.zeros((input_dim, self.units), dtype=np.int32)
        self._build_synapses()

    def _build_synapses(self) -> None:
        """Hook for generated wirings: draws the synapses once ``input_dim`` is known."""

    def add_synapse(self, src: int, dest: int, polarity: int) -> None:
        """Adds (or overwrites) the synapse ``src -> dest`` between two neurons.

        Args:
            src (int): Source neuron id, in ``0..units-1``.
            dest (int): Destination neuron id, in ``0..units-1``.
            polarity (int): +1 (excitatory) or -1 (inhibitory).
        """
        self._check_endpoint(src, self.units, "originating in", "units")
        self._check_endpoint(dest, self.units, "feeding into", "units")
        self._check_polarity(polarity)
        self.adjacency_matrix[src, dest] = polarity

    def add_sensory_synapse(self, src: int, dest: int, polarity: int) -> None:
        """Adds (or overwrites) the synapse from input feature ``src`` to neuron ``dest``.

        Args:
            src (int): Input feature id, in ``0..input_dim-1``.
            dest (int): Destination neuron id, in ``0..units-1``.
            polarity (int): +1 (excitatory) or -1 (inhibitory).
        """
        self._require_built("add_sensory_synapse()")
        self._check_endpoint(src, self.input_dim, "originating in", "input features")
        self._check_endpoint(dest, self.units, "feeding into", "units")
        self._check_polarity(polarity)
        self.sensory_adjacency_matrix[src, dest] = polarity

    def _check_endpoint(self, idx: Any, size: int, role: str, what: str) -> None:
        ok = isinstance(idx, numbers.Integral) and not isinstance(idx, bool) and 0 <= idx < size
        if not ok:
            raise ValueError(
                f"[{type(self).__name__}] cannot add synapse {role} {idx!r}: "
                f"there are only {size} {what} (ids 0..{size - 1})"
            )

    def _check_polarity(self, polarity: Any) -> None:
        if isinstance(polarity, bool) or polarity not in (-1, 1):
            raise ValueError(
                f"[{type(self).__name__}] cannot add synapse with polarity {polarity!r} "
                "(expected -1 or +1)"
            )

    def _require_built(self, what: str) -> None:
        if self.input_dim is None:
            raise WiringError(
                f"[{type(self).__name__}] {what} needs a built wiring: call "
                "build(input_dim) first (a model does this when it sees its input size)\n"
                + see("wiring-not-built")
            )

    @property
    def num_layers(self) -> int:
        """Number of neuron layers (1 unless the wiring is layered like an NCP)."""
        return 1

    def get_neurons_of_layer(self, layer_id: int) -> list[int]:
        """Ids of the neurons in layer ``layer_id`` (``0..num_layers-1``), ascending."""
        self._check_layer(layer_id)
        return list(range(self.units))

    def _check_layer(self, layer_id: Any) -> None:
        check_int(type(self).__name__, "layer_id", layer_id, 0, self.num_layers - 1)

    @property
    def layer_sizes(self) -> list[int]:
        """Number of neurons in each layer, in layer order."""
        return [len(self.get_neurons_of_layer(i)) for i in range(self.num_layers)]

    def get_type_of_neuron(self, neuron_id: int) -> str:
        """Kind of a neuron: ``"motor"`` below ``output_dim``, else ``"inter"``."""
        check_int(type(self).__name__, "neuron_id", neuron_id, 0, self.units - 1)
        return "motor" if neuron_id < (self.output_dim or 0) else "inter"

    @property
    def neuron_counts(self) -> dict[str, int | None]:
        """Neurons per kind; ``"sensory"`` is ``input_dim`` (None until built)."""
        counts: dict[str, int | None] = {kind: 0 for kind in KINDS}
        counts["sensory"] = self.input_dim
        for i in range(self.units):
            counts[self.get_type_of_neuron(i)] += 1
        return counts

    @property
    def synapse_count(self) -> int:
        """Number of synapses between the neurons (non-zero entries of ``adjacency_matrix``)."""
        return int(np.count_nonzero(self.adjacency_matrix))

    @property
    def sensory_synapse_count(self) -> int:
        """Number of synapses from the input features (entries of the sensory matrix)."""
        self._require_built("sensory_synapse_count")
        return int(np.count_nonzero(self.sensory_adjacency_matrix))

    def erev_initializer(self) -> np.ndarray:
        """A copy of ``adjacency_matrix``: the initial reversal potentials of a model."""
        return self.adjacency_matrix.copy()

    def sensory_erev_initializer(self) -> np.ndarray:
        """A copy of ``sensory_adjacency_matrix`` (the wiring must be built)."""
        self._require_built("sensory_erev_initializer()")
        return self.sensory_adjacency_matrix.copy()

    def get_config(self) -> dict[str, Any]:
        """A JSON-serialisable description from which
        [`from_config`][ncps_mlx.wirings.Wiring.from_config] rebuilds the wiring.

        A plain [`Wiring`][ncps_mlx.wirings.Wiring] stores both matrices; the generated wirings
        store their constructor arguments. Every config has ``"class_name"`` and ``"input_dim"``. A
        user subclass that does not override this method is saved as a plain ``Wiring``.
        """
        sensory = self.sensory_adjacency_matrix
        return {
            "class_name": "Wiring",
            "units": self.units,
            "output_dim": self.output_dim,
            "input_dim": self.input_dim,
            "adjacency_matrix": self.adjacency_matrix.tolist(),
            "sensory_adjacency_matrix": None if sensory is None else sensory.tolist(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Wiring:
        """Rebuilds a wiring from [`get_config`][ncps_mlx.wirings.Wiring.get_config] output, built
        if the original was.

        ``Wiring.from_config`` dispatches on ``config["class_name"]``; on a subclass the
        class name may be omitted.

        Args:
            config (dict): A config as returned by
                [`get_config`][ncps_mlx.wirings.Wiring.get_config].
        """
        args = dict(config)
        name = args.pop("class_name", cls.__name__)
        target = _WIRING_CLASSES.get(name)
        if target is None or not issubclass(target, cls):
            known = sorted(n for n, c in _WIRING_CLASSES.items() if issubclass(c, cls))
            raise WiringError(
                f"[{cls.__name__}] cannot restore class_name={name!r}; expected one of {known}\n"
                + see("wiring-config")
            )
        input_dim = args.pop("input_dim", None)
        return target._from_args(args, input_dim)

    @classmethod
    def _from_args(cls, args: dict[str, Any], input_dim: int | None) -> Wiring:
        wiring = cls(args["units"])
        if args.get("output_dim") is not None:
            wiring.set_output_dim(args["output_dim"])
        units = wiring.units
        wiring.adjacency_matrix = _matrix_from_config(args["adjacency_matrix"], (units, units))
        sensory = args.get("sensory_adjacency_matrix")
        if sensory is not None and input_dim is None:
            raise WiringError(
                "[Wiring] config has a sensory_adjacency_matrix but no input_dim\n"
                + see("wiring-config")
            )
        if input_dim is not None:
            wiring.build(input_dim)
            if sensory is not None:
                wiring.sensory_adjacency_matrix = _matrix_from_config(sensory, (input_dim, units))
        return wiring

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(units={self.units}, output_dim={self.output_dim}, "
            f"input_dim={self.input_dim})"
        )

    def draw(
        self,
        ax: Any = None,
        *,
        neuron_colors: dict[str, str] | None = None,
        synapse_colors: dict[str, str] | str | None = None,
        draw_labels: bool = False,
        legend: bool = True,
        node_size: float = 120.0,
    ) -> Any:
        """Draws the wiring with matplotlib in columns: sensory, inter, command, motor.

        Synapses are arrows coloured by polarity; a synapse of a neuron onto itself is drawn
        as a ring around that neuron. The wiring must be built.

        Args:
            ax (matplotlib.axes.Axes, optional): Axes to draw into. Default: a new figure.
            neuron_colors (dict, optional): Colour per neuron kind, merged over the defaults.
            synapse_colors (dict or str, optional): Colour per polarity (``"excitatory"``,
                ``"inhibitory"``), or one colour for both. Default: green and red.
            draw_labels (bool): Write the neuron ids next to the nodes. Default: ``False``.
            legend (bool): Add a legend of the neuron kinds, the synapse colours (one
                entry per polarity, or one for both when they share a colour) and, when
                a neuron synapses onto itself, the ring. Default: ``True``.
            node_size (float): Marker area of a neuron. Default: ``120.0``.

        Returns:
            The matplotlib Axes drawn into.
        """
        self._require_built("draw()")
        from ._draw import draw_wiring  # matplotlib is imported only when drawing

        return draw_wiring(
            self,
            ax,
            neuron_colors=neuron_colors,
            synapse_colors=synapse_colors,
            draw_labels=draw_labels,
            legend=legend,
            node_size=node_size,
        )

    def get_graph(self, include_sensory_neurons: bool = True) -> Any:
        """The wiring as a ``networkx.DiGraph``, node for node and edge for edge the graph
        of ``ncps``'s ``Wiring.get_graph``.

        Nodes: ``"neuron_<i>"`` for each unit, with attribute ``neuron_type`` (``"motor"``,
        ``"command"`` or ``"inter"``, from
        [`get_type_of_neuron`][ncps_mlx.wirings.Wiring.get_type_of_neuron]), then ``"sensory_<i>"``
        for each input feature (``neuron_type="sensory"``). Edges: one per synapse, sensory synapses
        first, each in row-major order of its matrix, with attribute ``polarity`` (``"excitatory"``
        or ``"inhibitory"``). The wiring must be built. Needs networkx: ``pip install
        'ncps-mlx[graph]'``.

        Args:
            include_sensory_neurons (bool): Include the input features and their synapses.
                Default: ``True``. (The reference ignores this argument and always
                includes them.)

        Returns:
            networkx.DiGraph: The graph; changing it does not change the wiring.

        Raises:
            WiringError: If the wiring is not built.
            ImportError: If networkx is not installed.
        """
        self._require_built("get_graph()")
        networkx = _import_networkx(type(self).__name__)
        graph = networkx.DiGraph()
        for i in range(self.units):
            graph.add_node(f"neuron_{i}", neuron_type=self.get_type_of_neuron(i))
        if include_sensory_neurons:
            for i in range(self.input_dim):
                graph.add_node(f"sensory_{i}", neuron_type="sensory")
            _add_synapse_edges(graph, "sensory", self.sensory_adjacency_matrix)
        _add_synapse_edges(graph, "neuron", self.adjacency_matrix)
        return graph


def _import_networkx(owner: str) -> Any:
    try:
        import networkx  # optional: only get_graph() needs it
    except ImportError as error:
        raise ImportError(
            f"[{owner}] get_graph() needs the optional dependency networkx: "
            f"pip install 'ncps-mlx[graph]'\n{see('missing-extra')}"
        ) from error
    return networkx


def _add_synapse_edges(graph: Any, source_kind: str, matrix: np.ndarray) -> None:
    """An edge ``<source_kind>_<src> -> neuron_<dest>`` per non-zero ``matrix[src, dest]``,
    in row-major order (the order of the reference's nested loops)."""
    for src, dest in zip(*np.nonzero(matrix), strict=True):
        polarity = "excitatory" if matrix[src, dest] >= 0 else "inhibitory"
        graph.add_edge(f"{source_kind}_{src}", f"neuron_{dest}", polarity=polarity)


def _matrix_from_config(rows: Any, shape: tuple[int, int]) -> np.ndarray:
    matrix = np.asarray(rows)
    if matrix.shape != shape or not np.isin(matrix, (-1, 0, 1)).all():
        raise WiringError(
            f"[Wiring] a config matrix must have shape {shape} and entries -1, 0 or +1; "
            f"got shape {matrix.shape}\n{see('wiring-config')}"
        )
    return matrix.astype(np.int32)


class _GeneratedWiring(Wiring):
    """A wiring fully determined by its constructor arguments and ``input_dim``."""

    def _init_args(self) -> dict[str, Any]:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"class_name": type(self).__name__, **self._init_args(), "input_dim": self.input_dim}

    @classmethod
    def _from_args(cls, args: dict[str, Any], input_dim: int | None) -> Wiring:
        wiring = cls(**args)
        if input_dim is not None:
            wiring.build(input_dim)
        return wiring

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._init_args().items())
        return f"{type(self).__name__}({args}, input_dim={self.input_dim})"


# Polarity draws of FullyConnected and Random: excitatory twice as likely as inhibitory.
_POLARITY_CHOICES = [-1, 1, 1]
# Polarity draws of NCP: inhibitory or excitatory with equal probability.
_SIGNS = np.array([-1, 1])


class FullyConnected(_GeneratedWiring):
    """Every neuron connects to every neuron and every input feature to every neuron.

    Polarities are random, excitatory with probability 2/3.

    Args:
        units (int): Number of neurons.
        output_dim (int, optional): Number of motor neurons (ids ``0..output_dim-1``).
            Default: ``units``.
        erev_init_seed (int): Seed of the polarity draws. Default: ``1111``.
        self_connections (bool): Whether a neuron synapses onto itself. Default: ``True``.
    """

    def __init__(
        self,
        units: int,
        output_dim: int | None = None,
        erev_init_seed: int = 1111,
        self_connections: bool = True,
    ) -> None:
        super().__init__(units)
        self.set_output_dim(self.units if output_dim is None else output_dim)
        self.erev_init_seed = check_int("FullyConnected", "erev_init_seed", erev_init_seed, 0)
        if not isinstance(self_connections, (bool, np.bool_)):
            raise ValueError(
                f"[FullyConnected] 'self_connections' must be a bool but got {self_connections!r}"
            )
        self.self_connections = bool(self_connections)
        self._rng = np.random.default_rng(self.erev_init_seed)
        # One draw per (src, dest) pair in row-major order, skipping the diagonal when
        # self-connections are off: the same stream as the reference's scalar draws.
        mask = np.ones((self.units, self.units), dtype=bool)
        if not self.self_connections:
            np.fill_diagonal(mask, False)
        self.adjacency_matrix[mask] = self._rng.choice(_POLARITY_CHOICES, size=int(mask.sum()))

    def _build_synapses(self) -> None:
        shape = (self.input_dim, self.units)
        self.sensory_adjacency_matrix[...] = self._rng.choice(_POLARITY_CHOICES, size=shape)

    def _init_args(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "output_dim": self.output_dim,
            "erev_init_seed": self.erev_init_seed,
            "self_connections": self.self_connections,
        }


class Random(_GeneratedWiring):
    """A random sparse wiring: a fixed fraction of all possible synapses is left out.

    ``round(n * (1 - sparsity_level))`` synapses are drawn without replacement from the
    ``n`` possible ones, both among the neurons and from the input features; polarities are
    excitatory with probability 2/3.

    Args:
        units (int): Number of neurons.
        output_dim (int, optional): Number of motor neurons. Default: ``units``.
        sparsity_level (float): Fraction of synapses left out, in ``[0, 1)``. Default: ``0.0``.
        random_seed (int): Seed of the draws. Default: ``1111``.
    """

    def __init__(
        self,
        units: int,
        output_dim: int | None = None,
        sparsity_level: float = 0.0,
        random_seed: int = 1111,
    ) -> None:
        super().__init__(units)
        self.set_output_dim(self.units if output_dim is None else output_dim)
        self.sparsity_level = check_number(
            "Random", "sparsity_level", sparsity_level, low=0.0, below=1.0
        )
        self.random_seed = check_int("Random", "random_seed", random_seed, 0)
        self._rng = np.random.default_rng(self.random_seed)
        src, dest = self._draw_pairs(self.units)
        self.adjacency_matrix[src, dest] = self._rng.choice(_POLARITY_CHOICES, size=len(src))

    def _draw_pairs(self, num_sources: int) -> tuple[np.ndarray, np.ndarray]:
        """Draws the synapse positions from all (src, dest) pairs in row-major order."""
        total = num_sources * self.units
        count = int(np.round(total * (1 - self.sparsity_level)))
        pairs = np.stack(np.divmod(np.arange(total), self.units), axis=1)
        chosen = self._rng.choice(pairs, size=count, replace=False)
        return chosen[:, 0], chosen[:, 1]

    def _build_synapses(self) -> None:
        src, dest = self._draw_pairs(self.input_dim)
        # The reference draws each sensory polarity twice and keeps the second draw;
        # drawing both keeps the random stream, hence the matrices, identical.
        polarity = self._rng.choice(_POLARITY_CHOICES, size=(len(src), 2))[:, 1]
        self.sensory_adjacency_matrix[src, dest] = polarity

    def _init_args(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "output_dim": self.output_dim,
            "sparsity_level": self.sparsity_level,
            "random_seed": self.random_seed,
        }


class NCP(_GeneratedWiring):
    """A Neural Circuit Policy wiring: four kinds of neurons in a sparse feed-forward chain.

    Inspired by the nervous system of *C. elegans* (Lechner et al., "Neural circuit policies
    enabling auditable autonomy", Nature Machine Intelligence 2020), signals flow

    ``sensory -> inter -> command -> motor``

    * **sensory** neurons are the input features. They are not cell units: each of the
      ``input_dim`` features synapses onto ``sensory_fanout`` random inter neurons.
    * **inter** neurons (layer 0) take the sensory signals and project to
      ``inter_fanout`` random command neurons each.
    * **command** neurons (layer 1) integrate the inter neurons and are the only layer with
      recurrent synapses among themselves (``recurrent_command_synapses`` random ones).
    * **motor** neurons (layer 2) each read ``motor_fanin`` random command neurons; their
      states are the outputs of the model.

    Any inter or command neuron the random draws leave unconnected receives extra synapses,
    so with fanouts of 1 or more every neuron lies on a path from the inputs to the outputs.
    A fanout (or fan-in) of 0 leaves its step to this fix-up alone, as in the reference:
    with ``motor_fanin=0`` each command neuron feeds one random motor neuron, and a motor
    neuron may read none. Neuron ids are ordered ``[motor | command | inter]`` so the
    outputs are the first ``motor_neurons`` entries of the state. Synapse polarities are
    excitatory or inhibitory with equal probability. [`AutoNCP`][ncps_mlx.wirings.AutoNCP] picks all
    these numbers from a size and a sparsity level.

    Args:
        inter_neurons (int): Number of inter neurons.
        command_neurons (int): Number of command neurons.
        motor_neurons (int): Number of motor neurons (the output size).
        sensory_fanout (int): Inter neurons each input feature connects to, in
            ``0..inter_neurons``.
        inter_fanout (int): Command neurons each inter neuron connects to, in
            ``0..command_neurons``.
        recurrent_command_synapses (int): Number of random command -> command draws
            (repeats overwrite each other), ``0`` or more.
        motor_fanin (int): Command neurons each motor neuron reads, in
            ``0..command_neurons``.
        seed (int): Seed of the ``numpy.random.RandomState`` drawing the synapses.
            Default: ``22222``.
    """

    def __init__(
        self,
        inter_neurons: int,
        command_neurons: int,
        motor_neurons: int,
        sensory_fanout: int,
        inter_fanout: int,
        recurrent_command_synapses: int,
        motor_fanin: int,
        seed: int = 22222,
    ) -> None:
        owner = type(self).__name__
        self._num_inter = check_int(owner, "inter_neurons", inter_neurons, 1)
        self._num_command = check_int(owner, "command_neurons", command_neurons, 1)
        self._num_motor = check_int(owner, "motor_neurons", motor_neurons, 1)
        super().__init__(self._num_inter + self._num_command + self._num_motor)
        self.set_output_dim(self._num_motor)
        self._sensory_fanout = _check_fanout(
            owner, "sensory_fanout", sensory_fanout, self._num_inter, "inter"
        )
        self._inter_fanout = _check_fanout(
            owner, "inter_fanout", inter_fanout, self._num_command, "command"
        )
        self._recurrent_command_synapses = check_int(
            owner, "recurrent_command_synapses", recurrent_command_synapses, 0
        )
        self._motor_fanin = _check_fanout(
            owner, "motor_fanin", motor_fanin, self._num_command, "command"
        )
        # RandomState's stream is frozen across numpy versions, hence reproducible wirings.
        self._seed = check_int(owner, "seed", seed, 0, 2**32 - 1)
        self._rng = np.random.RandomState(self._seed)

    @property
    def num_layers(self) -> int:
        """Three layers: inter (0), command (1), motor (2)."""
        return 3

    def get_neurons_of_layer(self, layer_id: int) -> list[int]:
        """Neuron ids of layer ``layer_id``: 0 inter, 1 command, 2 motor."""
        self._check_layer(layer_id)
        first_command = self._num_motor
        first_inter = self._num_motor + self._num_command
        bounds = [(first_inter, self.units), (first_command, first_inter), (0, first_command)]
        return list(range(*bounds[layer_id]))

    def get_type_of_neuron(self, neuron_id: int) -> str:
        """Kind of a neuron: ``"motor"``, ``"command"`` or ``"inter"``."""
        check_int(type(self).__name__, "neuron_id", neuron_id, 0, self.units - 1)
        if neuron_id < self._num_motor:
            return "motor"
        return "command" if neuron_id < self._num_motor + self._num_command else "inter"

    def _build_synapses(self) -> None:
        # The draw order matches the reference exactly; changing it changes every wiring.
        sensory = np.arange(self.input_dim)
        inter, command, motor = (np.array(self.get_neurons_of_layer(i)) for i in range(3))
        self._connect(
            self.sensory_adjacency_matrix, sensory, inter, self._sensory_fanout, len(sensory)
        )
        # The reference caps the fix-up fan-in of command neurons by the number of command
        # (not inter) neurons; kept, as it changes the draws whenever it binds.
        self._connect(self.adjacency_matrix, inter, command, self._inter_fanout, len(command))
        # Each recurrent synapse takes three scalar draws: the two neuron draws reject
        # out-of-range values, so they cannot be batched without changing the stream. Their
        # number grows with the command neurons only, not with the synapse count. Writing in
        # draw order lets a repeated pair keep its last polarity, as in the reference.
        for _ in range(self._recurrent_command_synapses):
            src = self._rng.choice(command)
            dest = self._rng.choice(command)
            self.adjacency_matrix[src, dest] = self._rng.choice(_SIGNS)
        # The transposed view is indexed [motor, command] and writes into adjacency_matrix.
        self._connect(self.adjacency_matrix.T, motor, command, self._motor_fanin, len(motor))

    def _connect(
        self,
        links: np.ndarray,
        anchors: np.ndarray,
        partners: np.ndarray,
        per_anchor: int,
        cap: int,
    ) -> None:
        """Links each anchor to ``per_anchor`` random partners, then every partner left out
        to ``clip(len(anchors) * per_anchor // len(partners), 1, cap)`` random anchors.

        ``links`` is the matrix (or a view of it) indexed ``[anchor, partner]``; the
        synapses are written into it in place.
        """
        # The reference draws the partners of an anchor in one call, then one polarity per
        # partner; one vector draw of k polarities consumes the same stream as k scalar
        # draws. So each anchor costs two draws and one write, whatever its fanout. The
        # ids come from the layer ranges, hence are valid: no per-synapse checks. The
        # pairs of one call are distinct and no pair is drawn twice (the fix-up only
        # visits partners never drawn before), so the order of the writes does not matter.
        reached = np.zeros(links.shape[1], dtype=bool)
        for anchor in anchors:
            chosen = self._rng.choice(partners, size=per_anchor, replace=False)
            links[anchor, chosen] = self._rng.choice(_SIGNS, size=per_anchor)
            reached[chosen] = True
        fan = int(np.clip(int(len(anchors) * per_anchor / len(partners)), 1, cap))
        for partner in partners[~reached[partners]]:
            chosen = self._rng.choice(anchors, size=fan, replace=False)
            links[chosen, partner] = self._rng.choice(_SIGNS, size=fan)

    def _init_args(self) -> dict[str, Any]:
        return {
            "inter_neurons": self._num_inter,
            "command_neurons": self._num_command,
            "motor_neurons": self._num_motor,
            "sensory_fanout": self._sensory_fanout,
            "inter_fanout": self._inter_fanout,
            "recurrent_command_synapses": self._recurrent_command_synapses,
            "motor_fanin": self._motor_fanin,
            "seed": self._seed,
        }


class AutoNCP(NCP):
    """An [`NCP`][ncps_mlx.wirings.NCP] sized from a neuron count, an output size and a sparsity
    level.

    With ``d = 1 - sparsity_level`` and ``r = units - output_size``: ``max(int(0.4 r), 1)``
    command neurons, the remaining ``r`` are inter neurons; the sensory fanout is
    ``max(int(inter d), 1)``, the inter fanout and motor fan-in ``max(int(command d), 1)``
    and ``max(int(2 command d), 1)`` recurrent command synapses are drawn.

    Args:
        units (int): Total number of neurons (inter + command + motor).
        output_size (int): Number of motor neurons, at least 1 and less than ``units - 2``
            (about 0.3 of ``units`` is a good start).
        sparsity_level (float): From 0.1 (dense) to 1.0 (sparsest). Default: ``0.5``.
        seed (int): Seed of the synapse draws. Default: ``22222``.
    """

    def __init__(
        self,
        units: int,
        output_size: int,
        sparsity_level: float = 0.5,
        seed: int = 22222,
    ) -> None:
        units = check_int("AutoNCP", "units", units, 1)
        output_size = check_int("AutoNCP", "output_size", output_size, 1)
        if output_size >= units - 2:
            raise ValueError(
                f"[AutoNCP] 'output_size' must be less than units - 2 but got "
                f"output_size={output_size} with units={units}"
            )
        sparsity_level = check_number(
            "AutoNCP", "sparsity_level", sparsity_level, low=0.1, high=1.0
        )
        self._output_size = output_size
        self._sparsity_level = sparsity_level
        density = 1.0 - sparsity_level
        command = max(int(0.4 * (units - output_size)), 1)
        inter = units - output_size - command
        super().__init__(
            inter_neurons=inter,
            command_neurons=command,
            motor_neurons=output_size,
            sensory_fanout=max(int(inter * density), 1),
            inter_fanout=max(int(command * density), 1),
            recurrent_command_synapses=max(int(command * density * 2), 1),
            motor_fanin=max(int(command * density), 1),
            seed=seed,
        )

    def _init_args(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "output_size": self._output_size,
            "sparsity_level": self._sparsity_level,
            "seed": self._seed,
        }


_WIRING_CLASSES: dict[str, type[Wiring]] = {
    cls.__name__: cls for cls in (Wiring, FullyConnected, Random, NCP, AutoNCP)
}
