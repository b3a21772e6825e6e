"""Closed-form continuous-time (CfC) cell."""

import math
from typing import Literal

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .. import kernels, ops
from ..kernels import direct
from .activations import get_activation
from .base import Cell, Consts, check_choice, check_positive_int, kernel_consts, numpy_consts

CfCMode = Literal["default", "pure", "no_gate"]
MODES = ("default", "pure", "no_gate")


def xavier_uniform(shape: tuple[int, int]) -> mx.array:
    """Glorot/Xavier uniform samples with torch's fan convention for a (out, in) array."""
    limit = math.sqrt(6.0 / (shape[0] + shape[1]))
    return mx.random.uniform(-limit, limit, shape)


class CfCCell(Cell):
    r"""A `Closed-form Continuous-time <https://arxiv.org/abs/2106.13898>`_ cell.

    With :math:`z = \mathrm{backbone}([x_t, h_t])` and elapsed time :math:`t`:

    .. math::

        f_1 = \tanh(W_1 z + b_1),\quad f_2 = \tanh(W_2 z + b_2),\quad
        g = \sigma\big((W_a z + b_a)\, t + W_b z + b_b\big)

        h_{t+1} = f_1 (1 - g) + g f_2 \quad \text{(default)},\qquad
        h_{t+1} = f_1 + g f_2 \quad \text{(no_gate)}

    and in ``pure`` mode, with :math:`u = W_1 z + b_1`,
    :math:`h_{t+1} = -A\, e^{-t(|w_\tau| + |u|)}\, u + A`.

    Numerically identical to ``ncps.torch.CfCCell`` (ncps 1.0.1) and loads its weights.
    One documented deviation: ``backbone_dropout`` is applied after every backbone layer in
    training mode, where the reference silently skips it when there is only one layer.

    Args:
        input_size (int): Number of input features.
        hidden_size (int): Number of hidden units (the state size).
        mode (str): ``"default"``, ``"pure"`` or ``"no_gate"``. Default: ``"default"``.
        backbone_activation (str): ``"lecun_tanh"``, ``"tanh"``, ``"relu"``, ``"silu"`` or
            ``"gelu"``. Default: ``"lecun_tanh"``.
        backbone_units (int): Width of the backbone layers. Default: ``128``.
        backbone_layers (int): Number of backbone layers; 0 feeds ``[x, h]`` straight into
            the heads. Default: ``1``.
        backbone_dropout (float): Dropout rate after each backbone layer. Default: ``0.0``.
        sparsity_mask (np.ndarray, optional): ``(input_size + hidden_size, hidden_size)``
            connectivity; its absolute value multiplies the ``ff1``/``ff2`` weights. Only
            with ``backbone_layers=0``. Default: ``None``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        mode: CfCMode = "default",
        backbone_activation: str = "lecun_tanh",
        backbone_units: int = 128,
        backbone_layers: int = 1,
        backbone_dropout: float = 0.0,
        sparsity_mask: np.ndarray | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        check_positive_int(name, "input_size", input_size)
        check_positive_int(name, "hidden_size", hidden_size)
        check_choice(name, "mode", mode, MODES)
        check_positive_int(name, "backbone_layers", backbone_layers, minimum=0)
        if backbone_layers > 0:
            check_positive_int(name, "backbone_units", backbone_units)
        if not (isinstance(backbone_dropout, (int, float)) and 0.0 <= backbone_dropout < 1.0):
            raise ValueError(
                f"[{name}] 'backbone_dropout' must be in [0, 1) but got {backbone_dropout!r}"
            )
        self._input_size = input_size
        self.hidden_size = hidden_size
        self.mode = mode
        self.backbone_activation = backbone_activation
        self._activation = get_activation(backbone_activation, name)
        self.backbone_units = backbone_units if backbone_layers > 0 else 0
        self.backbone_dropout = float(backbone_dropout)
        cat = input_size + hidden_size
        widths = [cat] + [backbone_units] * backbone_layers
        self.backbone = [nn.Linear(widths[i], widths[i + 1]) for i in range(backbone_layers)]
        if backbone_dropout > 0:
            self.dropout = nn.Dropout(backbone_dropout)
        head_in = widths[-1]
        self.ff1 = nn.Linear(head_in, hidden_size)
        if mode == "pure":
            self.w_tau = mx.zeros((1, hidden_size))
            self.A = mx.ones((1, hidden_size))
        else:
            self.ff2 = nn.Linear(head_in, hidden_size)
            self.time_a = nn.Linear(head_in, hidden_size)
            self.time_b = nn.Linear(head_in, hidden_size)
        self._head_masks: dict[str, mx.array] = {}
        self._signed_heads: frozenset[str] = frozenset()
        if sparsity_mask is not None:
            self._set_sparsity_mask(np.asarray(sparsity_mask), head_in)
        self._init_weights()

    def _set_sparsity_mask(self, mask: np.ndarray, head_in: int) -> None:
        expected = (head_in, self.hidden_size)
        if self.backbone or mask.shape != expected:
            raise ValueError(
                f"[{type(self).__name__}] 'sparsity_mask' must have shape {expected} and needs "
                f"backbone_layers=0, but got shape {mask.shape} with "
                f"{len(self.backbone)} backbone layers"
            )
        folded = mx.array(np.abs(mask.T).astype(np.float32))
        self.set_head_masks({"ff1": folded, "ff2": folded}, signed=())

    def set_head_masks(self, masks: dict[str, mx.array], signed: tuple[str, ...]) -> None:
        """Set the (hidden, inputs) masks multiplying each head's weight.

        Heads named in ``signed`` use ``|W| * mask`` so a signed mask fixes each synapse's
        polarity. Used by :class:`WiredCfCCell`; masks are not trainable.
        """
        self._head_masks = dict(masks)
        self._signed_heads = frozenset(signed)

    def _init_weights(self) -> None:
        # Like the reference: Xavier on every 2-D parameter (pure mode's w_tau and A too),
        # biases keep the Linear default U(+-1/sqrt(fan_in)).
        for layer in self.backbone:
            layer.weight = xavier_uniform(layer.weight.shape)
        for head in self.head_names:
            getattr(self, head).weight = xavier_uniform(getattr(self, head).weight.shape)
        if self.mode == "pure":
            self.w_tau = xavier_uniform(self.w_tau.shape)
            self.A = xavier_uniform(self.A.shape)

    @property
    def input_size(self) -> int:
        return self._input_size

    @property
    def state_size(self) -> int:
        return self.hidden_size

    @property
    def output_size(self) -> int:
        return self.hidden_size

    @property
    def head_names(self) -> tuple[str, ...]:
        return ("ff1",) if self.mode == "pure" else ("ff1", "ff2", "time_a", "time_b")

    def head_weights(self) -> tuple[mx.array, mx.array]:
        """The heads as one (n_heads * hidden, inputs) weight and bias, masks folded in."""
        weights, bias = self._masked_heads()
        return mx.concatenate(weights, axis=0), bias

    def _masked_heads(self) -> tuple[list[mx.array], mx.array]:
        weights = []
        for name in self.head_names:
            w = getattr(self, name).weight
            if name in self._signed_heads:
                w = mx.abs(w)
            if name in self._head_masks:
                w = w * self._head_masks[name].astype(w.dtype)
            weights.append(w)
        bias = mx.concatenate([getattr(self, name).bias for name in self.head_names])
        return weights, bias

    @property
    def runs_fused(self) -> bool:
        """Whether :meth:`step` runs as one primitive (:func:`ncps_mlx.kernels.cfc_step`:
        CPU, float32, no dropout being applied)."""
        dropping = "dropout" in self and self.training
        return not dropping and kernels.usable(self.ff1.weight.dtype)

    def derive(self) -> Consts:
        consts = self.derive_products()
        if self.runs_fused:
            weights, unit = self.fused_unit(consts, first=True)
            consts["fused"] = (weights, [unit])
        return consts

    def derive_products(self) -> Consts:
        """The matrices and biases of the step's products, as the MLX operations take them."""
        # The heads as one (inputs, heads) matrix: the layout `z @ W` reads without a
        # transposed view (the fused step would copy one on every step).
        weights, heads_b = self._masked_heads()
        heads_w_t = mx.concatenate([w.T for w in weights], axis=1)
        if self.backbone:
            first_w_t = mx.contiguous(self.backbone[0].weight.T)
            first_b = self.backbone[0].bias
        else:
            first_w_t, first_b = heads_w_t, heads_b
        # Row slices of a row-major matrix: both stay row-major.
        n_in = self.input_size
        consts = {"wx_t": first_w_t[:n_in], "wh_t": first_w_t[n_in:], "b": first_b}
        if self.backbone:
            consts.update(heads_w_t=heads_w_t, heads_b=heads_b)
        return consts

    def fused_unit(self, consts: Consts, first: bool) -> tuple[list[mx.array], tuple[int, int]]:
        """This cell as a unit of :func:`ncps_mlx.kernels.cfc_step`: its weights in the
        kernel's order and its ``(units, backbone layers)``. The first unit of a chain
        takes its input share projected (:meth:`project`), the others read the previous
        unit's state through ``Wx``."""
        weights = [] if first else [consts["wx_t"], consts["b"]]
        weights.append(consts["wh_t"])
        if self.backbone:
            for layer in self.backbone[1:]:
                weights += [mx.contiguous(layer.weight.T), layer.bias]
            weights += [consts["heads_w_t"], consts["heads_b"]]
        if self.mode == "pure":
            weights += [self.w_tau, self.A]
        return weights, (self.hidden_size, len(self.backbone))

    def project(self, consts: Consts, x: mx.array) -> mx.array:
        # The input's share of the first layer: hoisted out of the time loop.
        return mx.addmm(consts["b"], x, consts["wx_t"])

    def step(
        self, consts: Consts, inputs: mx.array, h: mx.array, dt: mx.array | float
    ) -> tuple[mx.array, mx.array]:
        if "fused" in consts:
            fused = fused_step(consts["fused"], inputs, h, dt, self.mode, self.backbone_activation)
            if fused is not None:
                return fused, fused
        z = inputs + h @ consts["wh_t"]
        if self.backbone:
            z = self._regularize(self._activation(z))
            for layer in self.backbone[1:]:
                z = self._regularize(self._activation(layer(z)))
            z = mx.addmm(consts["heads_b"], z, consts["heads_w_t"])
        h_next = self._solution(z, dt)
        return h_next, h_next

    def direct_consts(self, consts: Consts) -> Consts:
        return chain_direct_consts(consts, consts["fused"])

    def direct_step(
        self, consts: Consts, x: np.ndarray, h: np.ndarray, dt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        h_next = chain_direct_step(consts, x, h, dt, self.mode, self.backbone_activation)
        return h_next, h_next

    def _regularize(self, z: mx.array) -> mx.array:
        return self.dropout(z) if "dropout" in self else z

    def _solution(self, heads: mx.array, dt: mx.array | float) -> mx.array:
        if self.mode == "pure":
            decay = mx.exp(-dt * (mx.abs(self.w_tau) + mx.abs(heads)))
            return -self.A * decay * heads + self.A
        ff1, ff2, t_a, t_b = mx.split(heads, 4, axis=-1)
        ff1, ff2 = ops.tanh(ff1), ops.tanh(ff2)
        gate = ops.sigmoid(t_a * dt + t_b)
        if self.mode == "no_gate":
            return ff1 + gate * ff2
        return ff1 * (1.0 - gate) + gate * ff2


def fused_step(
    chain: tuple[list[mx.array], list[tuple[int, int]]],
    inputs: mx.array,
    h: mx.array,
    dt: mx.array | float,
    mode: str,
    activation: str,
) -> mx.array | None:
    """The new state from :func:`ncps_mlx.kernels.cfc_step`, or ``None`` for a ``dt`` it
    does not take (anything but a scalar or one value per sample): the caller then runs
    the MLX operations, whose broadcasting it keeps."""
    weights, layout = chain
    state = h.reshape(-1, h.shape[-1])
    batch = state.shape[0]
    if not isinstance(dt, mx.array):
        dt = mx.array(dt, dtype=state.dtype)
    if dt.size == 1:
        dt = dt.reshape(1, 1)
    if dt.shape not in ((1, 1), (batch, 1)):
        return None
    dt = mx.broadcast_to(dt.astype(state.dtype), (batch, 1))
    projected = inputs.reshape(batch, -1)
    return kernels.cfc_step(projected, state, dt, weights, layout, mode, activation).reshape(
        h.shape
    )


def chain_direct_consts(first: Consts, chain: tuple[list[mx.array], list]) -> Consts:
    """A chain's :meth:`~ncps_mlx.cells.Cell.direct_consts`: the first unit's input
    projection and the fused step's weights and layout."""
    weights, layout = chain
    consts = numpy_consts({"wx_t": first["wx_t"], "b": first["b"]})
    return {**consts, "weights": kernel_consts(weights), "layout": layout}


def chain_direct_step(
    consts: Consts, x: np.ndarray, h: np.ndarray, dt: np.ndarray, mode: str, activation: str
) -> np.ndarray:
    """A chain's new state from :func:`ncps_mlx.kernels.direct.cfc_step`."""
    projected = x @ consts["wx_t"] + consts["b"]
    return direct.cfc_step(projected, h, dt, consts["weights"], consts["layout"], mode, activation)
