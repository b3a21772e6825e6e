"""Liquid time-constant (LTC) cell."""

from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .. import kernels, ops
from ..errors import WiringError, see
from ..kernels import direct
from ..wirings import Wiring
from .base import (
    Consts,
    WiredCell,
    check_choice,
    check_positive_int,
    kernel_consts,
    numpy_consts,
)
from .solvers import FIELD_EVALUATIONS, SOLVERS

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


def synapse_activation(
    v: mx.array, synapses: dict[str, mx.array], box: Box, size: int
) -> tuple[mx.array, mx.array]:
    """Conductance-weighted sums over presynaptic neurons for potentials ``v`` (..., pre).

    Returns ``(sum_i A_ij E_ij, sum_i A_ij)`` of length ``size`` with
    ``A_ij = w_ij * sigmoid(sigma_ij * (v_i - mu_ij))``, evaluated on the ``box`` that
    holds the synapses (``synapses`` are cut to it; ``w`` carries the wiring mask).
    """
    pre, post = box
    shape = v.shape[:-1] + (size,)
    if pre.stop == pre.start:
        return mx.zeros(shape, v.dtype), mx.zeros(shape, v.dtype)
    x = synapses["sigma"] * (v[..., pre, None] - synapses["mu"])
    activation = synapses["w"] * ops.sigmoid(x)
    sums = (activation * synapses["erev"]).sum(axis=-2), activation.sum(axis=-2)
    if post.stop - post.start == size:
        return sums
    padding = [(0, 0)] * (v.ndim - 1) + [(post.start, size - post.stop)]
    return tuple(mx.pad(total, padding) for total in sums)


def map_features(x: Any, mapping: Mapping, weights: dict[str, Any], side: str) -> Any:
    """An input or output mapping (``side``) of ``x``: ``x * w + b``, ``x * w`` or ``x``.
    Arithmetic only, so MLX and NumPy arrays alike (the direct step's)."""
    if mapping is not None:
        x = x * weights[f"{side}_w"]
    if mapping == "affine":
        x = x + weights[f"{side}_b"]
    return x


# Inside a step the potentials are neuron-major, (N, 1, B), and the synapse grid is
# (post, pre, B): the sums over presynaptic neurons then come out of one batched matrix
# product, weights (post, 2, pre) @ sigmoids (post, pre, B) -> (post, 2, B), already in
# the state's layout. A (B, N) state would pay a transpose per ODE unfold (the grid needs
# the potentials along pre, the sums come out along post), two separate reductions and a
# squeeze each, and, on a wiring's box, two pads. See `LTCCell.step`.


def neuron_major(a: mx.array) -> mx.array:
    """``(B, ..., N)`` -> ``(N, ..., 1, B)`` (a ``(N,)`` vector is one sample)."""
    if a.ndim < 2:
        a = a[None]
    axes = [a.ndim - 1, *range(1, a.ndim - 1), 0]
    return mx.expand_dims(mx.transpose(a, axes), -2)


def _field_weights(synapses: dict[str, mx.array]) -> dict[str, mx.array]:
    """The boxed synapses laid out for :func:`_synaptic_sums` (computed once per call)."""
    w = synapses["w"]
    return {
        "sigma": synapses["sigma"].T[..., None],  # (post, pre, 1)
        "mu": synapses["mu"].T[..., None],
        "weights": mx.stack([(w * synapses["erev"]).T, w.T], axis=1),  # (post, 2, pre)
    }


def _synaptic_sums(v: mx.array, field: dict[str, mx.array], box: Box) -> mx.array:
    """``(sum_i A_ij E_ij, sum_i A_ij)`` as (N, 2, B) for neuron-major ``v`` (N, 1, B)."""
    pre, post = box
    size, batch = v.shape[0], v.shape[-1]
    if pre.stop - pre.start != size:
        v = v[pre]
    v = v.reshape(pre.stop - pre.start, batch)
    sums = field["weights"] @ ops.sigmoid(field["sigma"] * (v - field["mu"]))
    if post.stop - post.start == size:
        return sums
    return mx.pad(sums, [(post.start, size - post.stop), (0, 0), (0, 0)])


class LTCCell(WiredCell):
    r"""A `Liquid time-constant <https://ojs.aaai.org/index.php/AAAI/article/view/16936>`_
    cell on a wiring.

    The membrane potentials follow

    .. math::

        C_m \frac{dv_j}{dt} = g_l (v_l - v_j) + \sum_i A_{ij}(v_i) (E_{ij} - v_j)
        + \sum_k S_{kj}(x_k) (E^s_{kj} - v_j),

    with :math:`A_{ij}(v) = w_{ij} \sigma(\sigma_{ij}(v - \mu_{ij}))` on the wiring's
    synapses (and :math:`S` likewise for the sensory ones), integrated over the elapsed
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
            are used and :meth:`apply_weight_constraints` must clip them after each update
            (the package's training step does). Default: ``True`` (the reference cell's
            default is ``False``; its ``LTC`` layer's is ``True``).
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
        check_positive_int("LTCCell", "ode_unfolds", ode_unfolds)
        check_choice("LTCCell", "solver", solver, tuple(SOLVERS))
        if not isinstance(epsilon, (int, float)) or not epsilon >= 0:
            raise ValueError(f"[LTCCell] 'epsilon' must be a number >= 0 but got {epsilon!r}")
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
        for prefix, matrix in (("", adjacency), ("sensory_", sensory)):
            pre, post = np.nonzero(matrix)
            setattr(self, f"_{prefix}synapse_pre", mx.array(pre.astype(np.int32)))
            setattr(self, f"_{prefix}synapse_post", mx.array(post.astype(np.int32)))
            flat = (pre * matrix.shape[1] + post).astype(np.int32)
            setattr(self, f"_{prefix}synapse_flat", mx.array(flat))
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
    def runs_fused(self) -> bool:
        """Whether a call here and now runs each step as one primitive
        (:func:`ncps_mlx.kernels.ltc_step`: CPU, float32, semi-implicit solver)."""
        return self.solver == "semi_implicit" and kernels.usable(self.sigma.dtype)

    @property
    def synapse_slots(self) -> int:
        """Recurrent synapse sigmoids evaluated per sample and field evaluation (the
        bounding box of the synapses, see :func:`synapse_box`)."""
        return box_size(self._box)

    @property
    def sensory_synapse_slots(self) -> int:
        """Sensory synapse sigmoids evaluated per sample and time step."""
        return box_size(self._sensory_box)

    def _positive(self, name: str) -> mx.array:
        return self._constrain(getattr(self, name))

    def _constrain(self, value: mx.array) -> mx.array:
        return nn.softplus(value) if self.implicit_param_constraints else value

    def apply_weight_constraints(self) -> None:
        """Clip the positive parameters at zero (only with explicit constraints)."""
        if not self.implicit_param_constraints:
            for name in POSITIVE:
                setattr(self, name, mx.maximum(getattr(self, name), 0))

    def derive(self) -> Consts:
        gleak = self._positive("gleak")
        consts = {
            "synapses": self._boxed("", self._sparsity_mask, self._box),
            "sensory": self._boxed("sensory_", self._sensory_sparsity_mask, self._sensory_box),
            "cm": self._positive("cm"),
            "gleak": gleak,
            "leak_current": gleak * self.vleak,
        }
        if self.runs_fused:
            consts["fused"] = self.synapse_list()
            return consts
        # What `step` uses, in its neuron-major layout.
        consts["field"] = {k: consts[k][:, None, None] for k in ("cm", "gleak", "leak_current")}
        if box_size(self._box):
            consts["field"].update(_field_weights(consts["synapses"]))
        return consts

    def synapse_list(self, prefix: str = "") -> dict[str, mx.array]:
        """The wiring's synapses (with ``prefix="sensory_"`` the sensory ones) as (S,)
        vectors, as :func:`ncps_mlx.kernels.ltc_step` takes them: ``pre`` and ``post``
        (int32), ``sigma``, ``mu``, ``w`` (positive) and ``w_erev``."""

        def index(name: str) -> mx.array:
            return getattr(self, f"_{prefix}synapse_{name}")

        def gather(name: str) -> mx.array:
            return mx.take(getattr(self, prefix + name).reshape(-1), index("flat"))

        # Gathered first: softplus (exp and log) only for the synapses that exist.
        w = self._constrain(gather("w"))
        synapses = {"pre": index("pre"), "post": index("post"), "w": w}
        synapses.update(sigma=gather("sigma"), mu=gather("mu"), w_erev=w * gather("erev"))
        return synapses

    def _boxed(self, prefix: str, mask: mx.array, box: Box) -> dict[str, mx.array]:
        # The masks are 0/1, so folding them into w first changes no rounding.
        w = self._positive(prefix + "w") * mask.astype(self.sigma.dtype)
        parts = {"w": w, **{k: getattr(self, prefix + k) for k in ("sigma", "mu", "erev")}}
        return {key: value[box] for key, value in parts.items()}

    def mappings(self) -> Consts:
        """The input and output mappings' weights (those the mappings have)."""
        names = [f"{side}_{kind}" for side in ("input", "output") for kind in ("w", "b")]
        return {name: getattr(self, name) for name in names if name in self}

    def _map_inputs(self, x: mx.array) -> mx.array:
        return map_features(x, self.input_mapping, self, "input")  # a module is a dict

    def _map_outputs(self, v: mx.array) -> mx.array:
        y = v[..., : self.output_size]
        return map_features(y, self.output_mapping, self, "output")

    def project(self, consts: Consts, x: mx.array) -> tuple[mx.array, mx.array]:
        # Sensory synapses depend on the input only: evaluated for all steps at once, and
        # returned as `step` takes them: neuron-major, (N, T, 1, B) for x (B, T, F), or
        # (B, T, N) for the fused step.
        x = self._map_inputs(x)
        sums = synapse_activation(x, consts["sensory"], self._sensory_box, self.state_size)
        if "fused" in consts:
            return sums
        return tuple(neuron_major(total) for total in sums)

    def step(
        self,
        consts: Consts,
        inputs: tuple[mx.array, mx.array],
        h: mx.array,
        dt: mx.array | float,
    ) -> tuple[mx.array, mx.array]:
        if "fused" in consts:
            return self._fused_step(consts, inputs, h, dt)
        sensory_numerator, sensory_denominator = inputs  # (N, 1, B), see `project`
        field_consts = consts["field"]
        shape = h.shape  # (B, N) or (N,)
        v = h.T[:, None] if h.ndim == 2 else neuron_major(h)
        if isinstance(dt, mx.array) and dt.ndim > 0:
            if dt.ndim == 2 and dt.shape[-1] == 1:  # (B, 1): one timespan per sample
                dt = dt.reshape(1, 1, -1)
            else:
                dt = neuron_major(mx.broadcast_to(dt, shape))

        def field(v: mx.array) -> tuple[mx.array, mx.array]:
            numerator, denominator = sensory_numerator, sensory_denominator
            if "weights" in field_consts:  # else no synapses between the neurons
                sums = _synaptic_sums(v, field_consts, self._box)
                numerator = sums[:, 0:1] + numerator
                denominator = sums[:, 1:2] + denominator
            return (
                field_consts["leak_current"] + numerator,
                field_consts["gleak"] + denominator,
            )

        solve = SOLVERS[self.solver]
        v = solve(field, v, field_consts["cm"], dt, self.ode_unfolds, self.epsilon)
        v = mx.transpose(v, (2, 1, 0)).reshape(shape)  # (N, 1, B) -> (B, N)
        return self._map_outputs(v), v

    def kernel_terms(
        self, consts: Consts, sensory: tuple[Any, Any], dt: Any
    ) -> tuple[Any, Any, Any]:
        """``cm``, ``numerator`` and ``denominator`` of :func:`~ncps_mlx.kernels.ltc_step`
        from the sensory sums and the timespan, not yet broadcast to (B, N). Arithmetic
        only, so MLX and NumPy arrays alike (the direct step's)."""
        numerator, denominator = sensory
        return (
            consts["cm"] / (dt / self.ode_unfolds),
            consts["leak_current"] + numerator,
            consts["gleak"] + denominator + self.epsilon,
        )

    def _fused_step(
        self,
        consts: Consts,
        inputs: tuple[mx.array, mx.array],
        h: mx.array,
        dt: mx.array | float,
    ) -> tuple[mx.array, mx.array]:
        """:meth:`step` as one primitive (:func:`ncps_mlx.kernels.ltc_step`), on (B, N)."""
        shape = (-1, self.state_size)
        v = h.reshape(shape)
        cm, numerator, denominator = self.kernel_terms(consts, inputs, dt)
        cm = mx.broadcast_to(cm, v.shape)
        numerator, denominator = numerator.reshape(shape), denominator.reshape(shape)
        v = kernels.ltc_step(v, cm, numerator, denominator, consts["fused"], self.ode_unfolds)
        v = v.reshape(h.shape)
        return self._map_outputs(v), v

    def direct_consts(self, consts: Consts) -> Consts:
        arrays = {key: consts[key] for key in ("cm", "gleak", "leak_current")}
        synapses = {"synapses": consts["fused"], "sensory": self.synapse_list("sensory_")}
        return {**numpy_consts({**arrays, **self.mappings()}), **kernel_consts(synapses)}

    def direct_step(
        self, consts: Consts, x: np.ndarray, h: np.ndarray, dt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        x = map_features(x, self.input_mapping, consts, "input")
        sensory = direct.synapse_sums(x, consts["sensory"], self.state_size)
        cm, numerator, denominator = self.kernel_terms(consts, sensory, dt)
        v = direct.ltc_step(h, cm, numerator, denominator, consts["synapses"], self.ode_unfolds)
        y = map_features(v[:, : self.output_size], self.output_mapping, consts, "output")
        return y, v
