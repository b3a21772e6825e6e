"""Liquid time-constant (LTC) cell."""

import math
from types import ModuleType
from typing import Any, Literal, NamedTuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .. import ops
from .._checks import check_choice, check_int, check_number
from ..errors import WiringError, see
from ..wirings import Wiring
from .base import Consts, Footprint, WiredCell, register_cell
from .solvers import FIELD_EVALUATIONS, OVERFLOW_HEADROOM, SOLVERS, STABILITY_LIMITS

Mapping = Literal["affine", "linear"] | None
MAPPINGS = ("affine", "linear", None)

# Uniform initialisation ranges of the reference (ncps 1.0.1).
INIT_RANGES = {
    "gleak": (0.001, 1.0),
    "vleak": (-0.2, 0.2),
    "cm": (0.4, 0.6),
    "w": (0.001, 1.0),
    "sigma": (3.0, 8.0),
    "mu": (0.3, 0.8),
    "sensory_w": (0.001, 1.0),
    "sensory_sigma": (3.0, 8.0),
    "sensory_mu": (0.3, 0.8),
}
# Parameters that must stay positive; see LTCCell's `implicit_param_constraints`.
POSITIVE = ("w", "sensory_w", "cm", "gleak")


Box = tuple[slice, slice]


def box_size(box: Box) -> int:
    """Slots in a (pre, post) block."""
    return (box[0].stop - box[0].start) * (box[1].stop - box[1].start)


def synapse_box(mask: np.ndarray) -> Box:
    """The smallest (pre, post) block holding every synapse of a 0/1 ``mask``.

    Synapses outside it do not exist, so their sigmoids need not be evaluated: for an NCP
    the inter neurons receive no internal synapses and the motor neurons send none, which
    shrinks the grid evaluated at every ODE unfold by 2-3x without any gather.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def synaptic_sums(o: ModuleType, synapses: Any, v: Any) -> tuple[Any, Any]:
    r"""``(sum_i w_ij E_ij a_ij, sum_i w_ij a_ij)`` for presynaptic potentials ``v``, with
    $a_{ij} = \sigma(\sigma_{ij} (v_i - \mu_{ij}))$, over an op set ``o``.

    ``synapses`` lays the population out for its backend: ``gates(v)`` gives every
    ``sigma_ij (v_i - mu_ij)`` and ``sums(a)`` the two weighted sums into the
    postsynaptic neurons (`SynapseGrid` for MLX, a pair of convolutions for Core
    ML, `ncps_mlx.export.graphs.Synapses`).
    """
    return synapses.sums(o.sigmoid(synapses.gates(v)))


class SynapseGrid(NamedTuple):
    """A synapse population for MLX: the box of its synapses, neuron-major.

    Potentials are ``(pre, 1, B)``: the grid is ``(post, pre, B)`` and both sums come out
    of one batched product, ``weights (post, 2, pre) @ a (post, pre, B)``, already in the
    state's layout as ``(post, 1, B)`` slices (a batch-major state would pay transposes,
    two reductions and a squeeze each per evaluation).
    """

    sigma: mx.array  # (post, pre, 1)
    mu: mx.array  # (post, pre, 1)
    weights: mx.array  # (post, 2, pre): w * E and w
    box: Box
    size: int  # postsynaptic neurons in all

    def gates(self, v: mx.array) -> mx.array:
        """Every `sigma_ij (v_i - mu_ij)` of the box, `(post, pre, B)`, from the potentials
        `v` of all presynaptic neurons or of the box's only, `(pre, 1, B)`."""
        pre = self.box[0]
        if pre.stop - pre.start != v.shape[0]:
            v = v[pre]
        return self.sigma * (v.reshape(pre.stop - pre.start, -1) - self.mu)

    def sums(self, activation: mx.array) -> tuple[mx.array, mx.array]:
        """The two weighted sums of the synapses' `activation` `(post, pre, B)` into every
        postsynaptic neuron: `(sum_i w_ij E_ij a_ij, sum_i w_ij a_ij)`, each `(size, 1, B)`,
        zero for the neurons outside the box."""
        sums = self.weights @ activation
        post = self.box[1]
        if post.stop - post.start != self.size:
            sums = mx.pad(sums, [(post.start, self.size - post.stop), (0, 0), (0, 0)])
        return sums[:, 0:1], sums[:, 1:2]


class SynapseList(NamedTuple):
    """The synapses that exist, one entry each (int32 indices, parameters).

    ``w`` has the positivity constraint applied; ``pre`` indexes the inputs (sensory
    synapses) or the neurons, ``post`` the neurons.
    """

    pre: mx.array
    post: mx.array
    sigma: mx.array
    mu: mx.array
    w: mx.array
    erev: mx.array


def map_features(x: Any, mapping: Mapping, weights: Any, side: str) -> Any:
    """An input or output mapping (``side``) of ``x``: ``x * w + b``, ``x * w`` or ``x``.
    Arithmetic only, so MLX and NumPy arrays alike; ``weights`` is anything indexed by
    ``"input_w"`` and the like (a cell is)."""
    if mapping is not None:
        x = x * weights[f"{side}_w"]
    if mapping == "affine":
        x = x + weights[f"{side}_b"]
    return x


def _neuron_major(a: mx.array) -> mx.array:
    """A state (B, N) as (N, 1, B); an unbatched (N,) as (N, 1, 1)."""
    return a.T[:, None] if a.ndim == 2 else a[:, None, None]


@register_cell
class LTCCell(WiredCell):
    r"""A [Liquid time-constant](https://ojs.aaai.org/index.php/AAAI/article/view/16936)
    cell on a wiring.

    The membrane potentials follow

    $$
    C_m \frac{dv_j}{dt} = g_l (v_l - v_j) + \sum_i A_{ij}(v_i) (E_{ij} - v_j)
    + \sum_k S_{kj}(x_k) (E^s_{kj} - v_j),
    $$

    with $A_{ij}(v) = w_{ij} \sigma(\sigma_{ij}(v - \mu_{ij}))$ on the wiring's
    synapses (and $S$ likewise for the sensory ones), integrated over the elapsed
    time by ``ode_unfolds`` steps of ``solver``. The output is the first
    ``wiring.output_dim`` potentials (the motor neurons) after the output mapping.
    Numerically identical to ``ncps.torch.LTCCell`` (ncps 1.0.1) with the default solver.

    Args:
        wiring (Wiring): The wiring (use ``FullyConnected(units)`` for a dense cell).
        in_features (int, optional): Number of input features; builds the wiring.
        input_mapping (str or None): ``"affine"`` (``x * w + b``), ``"linear"`` (``x * w``)
            or ``None``. Default: ``"affine"``.
        output_mapping (str or None): Likewise for the motor outputs. Default: ``"affine"``.
        ode_unfolds (int): Solver sub-steps per time step. Default: ``6``.
        epsilon (float): Added to the semi-implicit denominator. Default: ``1e-8``.
        implicit_param_constraints (bool): Keep ``w``, ``sensory_w``, ``cm`` and ``gleak``
            positive through a softplus in the forward pass. With ``False`` the raw values
            are used and
            [`apply_weight_constraints`][ncps_mlx.cells.LTCCell.apply_weight_constraints] must clip
            them after each update (the package's training step does). Default: ``True`` (the
            reference cell's default is ``False``; its ``LTC`` layer's is ``True``).
        solver (str): ``"semi_implicit"`` (the reference's), ``"explicit_euler"`` or
            ``"rk4"``. Default: ``"semi_implicit"``.
    """

    requires_positive_timespans = True

    def __init__(
        self,
        wiring: Wiring,
        in_features: int | None = None,
        input_mapping: Mapping = "affine",
        output_mapping: Mapping = "affine",
        ode_unfolds: int = 6,
        epsilon: float = 1e-8,
        implicit_param_constraints: bool = True,
        *,
        solver: str = "semi_implicit",
    ):
        super().__init__()
        check_choice("LTCCell", "input_mapping", input_mapping, MAPPINGS)
        check_choice("LTCCell", "output_mapping", output_mapping, MAPPINGS)
        check_int("LTCCell", "ode_unfolds", ode_unfolds)
        check_choice("LTCCell", "solver", solver, SOLVERS)
        check_number("LTCCell", "epsilon", epsilon, low=0.0)
        self._attach_wiring(wiring, in_features)
        if wiring.output_dim is None:  # the outputs are the motor neurons' potentials
            raise WiringError(
                "[LTCCell] the wiring declares no motor (output) neurons: call "
                f"wiring.set_output_dim(n) first\n{see('wiring-not-built')}"
            )
        self.input_mapping = input_mapping
        self.output_mapping = output_mapping
        self.ode_unfolds = ode_unfolds
        self.epsilon = float(epsilon)
        self.implicit_param_constraints = bool(implicit_param_constraints)
        self.solver = solver
        self._allocate_parameters()

    def _allocate_parameters(self) -> None:
        n, s, m = self.state_size, self.input_size, self.output_size
        shapes = {"gleak": (n,), "vleak": (n,), "cm": (n,), "sigma": (n, n), "mu": (n, n)}
        shapes.update(w=(n, n), sensory_sigma=(s, n), sensory_mu=(s, n), sensory_w=(s, n))
        for name, shape in shapes.items():
            low, high = INIT_RANGES[name]
            setattr(self, name, mx.random.uniform(low, high, shape))
        adjacency = self._wiring.adjacency_matrix.astype(np.float32)
        sensory = self._wiring.sensory_adjacency_matrix.astype(np.float32)
        self.erev = mx.array(adjacency)
        self.sensory_erev = mx.array(sensory)
        self._sparsity_mask = mx.array(np.abs(adjacency))
        self._sensory_sparsity_mask = mx.array(np.abs(sensory))
        # The synapses' (pre, post, flat) indices: wiring structure, kept out of the
        # module's state so they are constants, never traced inputs, of a compiled step.
        indices = {}
        for prefix, matrix in (("", adjacency), ("sensory_", sensory)):
            pre, post = np.nonzero(matrix)
            flat = pre * matrix.shape[1] + post
            indices[prefix] = tuple(a.astype(np.int32) for a in (pre, post, flat))
        object.__setattr__(self, "_synapse_indices", indices)
        object.__setattr__(self, "_box", synapse_box(adjacency != 0))
        object.__setattr__(self, "_sensory_box", synapse_box(sensory != 0))
        if self.input_mapping is not None:
            self.input_w = mx.ones((s,))
        if self.input_mapping == "affine":
            self.input_b = mx.zeros((s,))
        if self.output_mapping is not None:
            self.output_w = mx.ones((m,))
        if self.output_mapping == "affine":
            self.output_b = mx.zeros((m,))

    @property
    def field_evaluations(self) -> int:
        """Evaluations of the recurrent synapses per time step: ``ode_unfolds`` times the
        solver's evaluations per unfold (rk4: 4)."""
        return self.ode_unfolds * FIELD_EVALUATIONS[self.solver]

    @property
    def synapse_slots(self) -> int:
        """Recurrent synapse sigmoids evaluated per sample and field evaluation (the
        bounding box of the synapses, see `synapse_box`)."""
        return box_size(self._box)

    @property
    def sensory_synapse_slots(self) -> int:
        """Sensory synapse sigmoids evaluated per sample and time step."""
        return box_size(self._sensory_box)

    @property
    def sparsity_mask(self) -> mx.array:
        """``|adjacency|``: 1 where a synapse between the neurons exists (not trainable)."""
        return self._sparsity_mask

    @property
    def sensory_sparsity_mask(self) -> mx.array:
        """``|sensory adjacency|``: 1 where a sensory synapse exists (not trainable)."""
        return self._sensory_sparsity_mask

    def constrain(self, value: mx.array) -> mx.array:
        """The positivity constraint of ``w``, ``sensory_w``, ``cm`` and ``gleak``:
        softplus with ``implicit_param_constraints``, else the identity."""
        return nn.softplus(value) if self.implicit_param_constraints else value

    def _positive(self, name: str) -> mx.array:
        return self.constrain(getattr(self, name))

    def apply_weight_constraints(self) -> None:
        """Clip the positive parameters at zero (only with explicit constraints)."""
        if not self.implicit_param_constraints:
            for name in POSITIVE:
                setattr(self, name, mx.maximum(getattr(self, name), 0))

    def derive(self) -> Consts:
        """The synapse populations as `SynapseGrid` (``None`` without synapses),
        and ``cm``, ``gleak`` and ``leak_current = gleak * vleak`` neuron-major, (N, 1, 1)."""
        gleak = self._positive("gleak")
        return {
            "synapses": self._grid("", self._sparsity_mask, self._box),
            "sensory": self._grid("sensory_", self._sensory_sparsity_mask, self._sensory_box),
            "cm": self._positive("cm")[:, None, None],
            "gleak": gleak[:, None, None],
            "leak_current": (gleak * self.vleak)[:, None, None],
        }

    def _grid(self, prefix: str, mask: mx.array, box: Box) -> SynapseGrid | None:
        if box_size(box) == 0:
            return None
        # The masks are 0/1, so folding them into w first changes no rounding.
        w = (self._positive(prefix + "w") * mask.astype(self.sigma.dtype))[box]
        erev = getattr(self, prefix + "erev")[box]
        sigma, mu = (getattr(self, prefix + name)[box].T[..., None] for name in ("sigma", "mu"))
        weights = mx.stack([(w * erev).T, w.T], axis=1)
        return SynapseGrid(sigma, mu, weights, box, self.state_size)

    def synapses(self, sensory: bool = False) -> SynapseList:
        """The recurrent (or, with ``sensory=True``, the sensory) synapses that exist,
        one entry each."""
        prefix = "sensory_" if sensory else ""
        pre, post, flat = (mx.array(index) for index in self._synapse_indices[prefix])

        def gather(name: str) -> mx.array:
            return mx.take(getattr(self, prefix + name).reshape(-1), flat)

        # Gathered first: softplus (exp and log) only for the synapses that exist.
        w = self.constrain(gather("w"))
        sigma, mu, erev = gather("sigma"), gather("mu"), gather("erev")
        return SynapseList(pre, post, sigma, mu, w, erev)

    def map_inputs(self, x: Any) -> Any:
        """The input mapping of ``x`` (MLX or NumPy)."""
        return map_features(x, self.input_mapping, self, "input")  # a module is a dict

    def map_outputs(self, v: Any) -> Any:
        """The outputs for potentials ``v`` (..., N): the motor neurons, mapped."""
        return map_features(v[..., : self.output_size], self.output_mapping, self, "output")

    def project(self, consts: Consts, x: mx.array) -> tuple[mx.array, mx.array]:
        """The sensory synapses' sums, which depend on the input only: for ``x``
        (..., B, F), two neuron-major arrays (N, ..., 1, B) with the leading axes reversed
        (for a sequence (B, T, F): (N, T, 1, B); for a step (B, F): (N, 1, B))."""
        x = self.map_inputs(x)
        v = mx.transpose(x if x.ndim > 1 else x[None])  # (F, ..., B); one sample is B = 1
        shape = (self.state_size, *v.shape[1:-1], 1, v.shape[-1])
        if consts["sensory"] is None:
            return mx.zeros(shape, v.dtype), mx.zeros(shape, v.dtype)
        sums = synaptic_sums(ops, consts["sensory"], v)
        return tuple(total.reshape(shape) for total in sums)

    def step(
        self,
        consts: Consts,
        inputs: tuple[mx.array, mx.array],
        h: mx.array,
        dt: mx.array | float,
    ) -> tuple[mx.array, mx.array]:
        """One LTC step: `ode_unfolds` sub-steps of the solver over elapsed time `dt` (a
        float, `(B,)` or `(B, 1)`), with the sensory sums from
        [`project`][ncps_mlx.cells.LTCCell.project] held fixed.

        Returns:
            `(y, h_next)`: the output mapping of the motor neurons' potentials
            `(B, output_size)`, and every neuron's new potential `(B, state_size)`.
        """
        sensory_numerator, sensory_denominator = inputs  # (N, 1, B), see `project`
        synapses = consts["synapses"]
        if isinstance(dt, mx.array) and dt.ndim == 2 and dt.shape[-1] == 1:
            dt = dt.reshape(1, 1, -1)  # (B, 1): one timespan per sample
        elif isinstance(dt, mx.array) and dt.ndim > 0:  # as it broadcasts against h
            dt = _neuron_major(mx.broadcast_to(dt, h.shape))

        def field(v: mx.array) -> tuple[mx.array, mx.array]:
            numerator, denominator = sensory_numerator, sensory_denominator
            if synapses is not None:
                numerator_sum, denominator_sum = synaptic_sums(ops, synapses, v)
                numerator = numerator_sum + numerator
                denominator = denominator_sum + denominator
            return consts["leak_current"] + numerator, consts["gleak"] + denominator

        solve = SOLVERS[self.solver]
        v = solve(field, _neuron_major(h), consts["cm"], dt, self.ode_unfolds, self.epsilon)
        v = mx.transpose(v, (2, 1, 0)).reshape(h.shape)  # (N, 1, B) -> (B, N)
        return self.map_outputs(v), v

    def decay_rates(self) -> np.ndarray:
        r"""A bound of each neuron's decay rate, the largest $\lambda_j = d_j(v) / C_{m,j}$
        the ODE can reach: $(g_{l,j} + \sum_i w_{ij} + \sum_k w^s_{kj}) / C_{m,j}$
        over the neuron's recurrent and sensory synapses (every sigmoid is at most 1), with
        the positivity constraint applied. Float64 NumPy, (N,)."""

        def value(name: str) -> np.ndarray:
            return np.array(self._positive(name).astype(mx.float32), dtype=np.float64)

        conductance = np.maximum(value("gleak"), 0.0)
        for prefix in ("", "sensory_"):
            mask = np.array(getattr(self, f"_{prefix}sparsity_mask"), dtype=np.float64)
            conductance = conductance + (np.maximum(value(prefix + "w"), 0.0) * mask).sum(0)
        cm = np.maximum(value("cm"), np.finfo(np.float64).tiny)
        return conductance / cm

    def timespan_bounds(self) -> tuple[float, float]:
        """The elapsed times per step for which the solver is known to stay finite in the
        parameters' dtype, from the current weights.

        * ``"explicit_euler"`` and ``"rk4"`` are stable while each sub-step
          ``timespan / ode_unfolds`` times the largest
          [`decay_rates`][ncps_mlx.cells.LTCCell.decay_rates] stays below 2 (Euler) or 2.785 (RK4);
          beyond, the potentials can grow at every sub-step until they overflow. The bound is safe:
          it assumes every synapse fully open.
        * ``"semi_implicit"`` is stable for any step but divides ``cm`` by the sub-step,
          which overflows when ``cm / (timespan / ode_unfolds)`` nears the dtype's
          largest value (float16: 65504), so the smallest timespan is bounded instead.

        Timespans beyond the dtype's largest value become inf in it, which only the
        semi-implicit solver takes.
        """
        dtype = self.cm.dtype
        largest = float(mx.finfo(dtype).max)
        limit = STABILITY_LIMITS[self.solver]
        if math.isinf(limit):  # semi-implicit: cm / sub-step must not overflow
            cm = float(np.max(np.array(self._positive("cm").astype(mx.float32))))
            return self.ode_unfolds * OVERFLOW_HEADROOM * max(cm, 0.0) / largest, math.inf
        rate = float(self.decay_rates().max(initial=0.0))
        high = limit * self.ode_unfolds / rate if rate > 0 else math.inf
        return 0.0, min(high, largest)

    def footprint(self) -> Footprint:
        """The work of a step: the sensory synapses once, then every synapse slot of the
        box and every neuron at each evaluation of the ODE's right-hand side."""
        n, slots, sensory = self.state_size, self.synapse_slots, self.sensory_synapse_slots
        evaluations = self.field_evaluations  # per time step (rk4: 4 per unfold)
        # Per recurrent synapse slot: subtract mu, multiply by sigma, then a multiply-add
        # into each of the two sums. The sensory synapses (all steps at once) multiply by w
        # and by E and reduce twice. Saved for backward: one conductance per synapse, and
        # the numerator, denominator and potential of every neuron at every unfold.
        field_values = FIELD_EVALUATIONS[self.solver] * (self.synapse_count + 2 * n) + n
        return Footprint(
            elementwise=7 * sensory + evaluations * (6 * slots + 8 * n),
            transcendentals=sensory + evaluations * slots,
            synapse_slots=sensory + evaluations * slots,
            saved_values=self.sensory_synapse_count + 2 * n + self.ode_unfolds * field_values,
        )

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this cell, the wiring as its config."""
        return {
            "wiring": self._wiring.get_config(),
            "input_mapping": self.input_mapping,
            "output_mapping": self.output_mapping,
            "ode_unfolds": self.ode_unfolds,
            "epsilon": self.epsilon,
            "implicit_param_constraints": self.implicit_param_constraints,
            "solver": self.solver,
        }
