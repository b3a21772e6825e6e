"""Closed-form continuous-time (CfC) cell."""

import math
from types import ModuleType
from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .. import ops
from .._checks import check_choice, check_int, check_number
from .activations import ACTIVATIONS
from .base import Cell, Consts, Footprint, register_cell

CfCMode = Literal["default", "pure", "no_gate"]
#: The CfC modes; the order is the fused kernels' numbering.
MODES = ("default", "pure", "no_gate")


def xavier_uniform(shape: tuple[int, int]) -> mx.array:
    """Glorot/Xavier uniform samples with torch's fan convention for a (out, in) array."""
    limit = math.sqrt(6.0 / (shape[0] + shape[1]))
    return mx.random.uniform(-limit, limit, shape)


def cfc_solution(
    o: ModuleType, mode: str, heads: Any, dt: Any, tau: Any = None, amplitude: Any = None
) -> Any:
    """The new state from a CfC cell's ``heads`` over an op set ``o`` (see
    [`ncps_mlx.ops`][ncps_mlx.ops]).

    ``heads`` holds ``ff1, ff2, time_a, time_b`` side by side (``ff1`` alone in ``pure``
    mode, with ``tau = |w_tau|`` and ``amplitude = A``).
    """
    if mode == "pure":
        return -amplitude * o.exp(-dt * (tau + abs(heads))) * heads + amplitude
    ff1, ff2, t_a, t_b = o.chunks(heads, 4)
    ff1, ff2 = o.tanh(ff1), o.tanh(ff2)
    gate = o.sigmoid(t_a * dt + t_b)
    if mode == "no_gate":
        return ff1 + gate * ff2
    return ff1 * (1.0 - gate) + gate * ff2


@register_cell
class CfCCell(Cell):
    r"""A [Closed-form Continuous-time](https://arxiv.org/abs/2106.13898) cell.

    With $z = \mathrm{backbone}([x_t, h_t])$ and elapsed time $t$:

    $$
    f_1 = \tanh(W_1 z + b_1),\quad f_2 = \tanh(W_2 z + b_2),\quad
    g = \sigma\big((W_a z + b_a)\, t + W_b z + b_b\big)
    $$

    $$
    h_{t+1} = f_1 (1 - g) + g f_2 \quad \text{(default)},\qquad
    h_{t+1} = f_1 + g f_2 \quad \text{(no\_gate)}
    $$

    and in ``pure`` mode, with $u = W_1 z + b_1$,
    $h_{t+1} = -A\, e^{-t(|w_\tau| + |u|)}\, u + A$.

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
        self._input_size = check_int(name, "input_size", input_size)
        self.hidden_size = check_int(name, "hidden_size", hidden_size)
        self.mode = check_choice(name, "mode", mode, MODES)
        self.backbone_activation = check_choice(
            name, "activation", backbone_activation, ACTIVATIONS
        )
        backbone_layers = check_int(name, "backbone_layers", backbone_layers, low=0)
        if backbone_layers > 0:
            check_int(name, "backbone_units", backbone_units)
        self.backbone_dropout = check_number(
            name, "backbone_dropout", backbone_dropout, low=0.0, below=1.0
        )
        self.backbone_units = backbone_units if backbone_layers > 0 else 0
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
        polarity. Used by [`WiredCfCCell`][ncps_mlx.cells.WiredCfCCell]; masks are not trainable.
        """
        self._head_masks = dict(masks)
        self._signed_heads = frozenset(signed)

    @property
    def head_masks(self) -> dict[str, mx.array]:
        """The (hidden, inputs) mask of each masked head, by head name."""
        return dict(self._head_masks)

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
        """Features of the input `x`."""
        return self._input_size

    @property
    def state_size(self) -> int:
        """Size of the state `h`: `hidden_size`."""
        return self.hidden_size

    @property
    def output_size(self) -> int:
        """Size of the output `y`: `hidden_size` (the output is the new state)."""
        return self.hidden_size

    @property
    def head_names(self) -> tuple[str, ...]:
        """The heads in the order they are fused: ``ff1`` (pure mode), or ``ff1``,
        ``ff2``, ``time_a``, ``time_b``."""
        return ("ff1",) if self.mode == "pure" else ("ff1", "ff2", "time_a", "time_b")

    @property
    def applies_dropout(self) -> bool:
        """Whether a step applies dropout now (a dropout rate, in training mode)."""
        return "dropout" in self and self.training

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

    def derive(self) -> Consts:
        """The step's products as ``x @ W`` takes them, and pure mode's ``|w_tau|``.

        ``wx_t``, ``wh_t`` (rows of the first layer's transposed weight for the input and
        the state) and ``b``; with a backbone, ``heads_w_t`` (inputs, heads) and
        ``heads_b``; in pure mode ``tau``.
        """
        # The heads as one (inputs, heads) matrix: the layout `z @ W` reads without a
        # transposed view.
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
        if self.mode == "pure":
            consts["tau"] = mx.abs(self.w_tau)
        return consts

    def project(self, consts: Consts, x: mx.array) -> mx.array:
        """The input's share of the first layer, `x @ wx_t + b`, for `x` of shape
        `(..., input_size)`: hoisted out of the time loop."""
        return mx.addmm(consts["b"], x, consts["wx_t"])

    def step(
        self, consts: Consts, inputs: mx.array, h: mx.array, dt: mx.array | float
    ) -> tuple[mx.array, mx.array]:
        """One CfC step: the state's share of the first layer added to the projected
        `inputs`, the rest of the backbone and the heads, then the closed-form solution
        at elapsed time `dt` (a float or `(B, 1)`).

        Returns:
            `(y, h_next)`, both the new state `(B, hidden_size)`.
        """
        z = inputs + h @ consts["wh_t"]
        if self.backbone:
            z = self._activate(z)
            for layer in self.backbone[1:]:
                z = self._activate(layer(z))
            z = mx.addmm(consts["heads_b"], z, consts["heads_w_t"])
        h_next = cfc_solution(ops, self.mode, z, dt, consts.get("tau"), getattr(self, "A", None))
        return h_next, h_next

    def _activate(self, z: mx.array) -> mx.array:
        z = ACTIVATIONS[self.backbone_activation](ops, z)
        return self.dropout(z) if "dropout" in self else z

    def footprint(self) -> Footprint:
        """The work of a step: the input's product hoisted, the state's product, backbone
        layers and heads in the loop, and the gates and solution element by element."""
        h, units, layers = self.hidden_size, self.backbone_units, len(self.backbone)
        heads = len(self.head_names) * h
        first = units if layers else heads
        loop = [(h, first)] + [(units, units)] * max(layers - 1, 0)
        loop += [(units, heads)] if layers else []
        activations = units * layers if self.backbone_activation != "relu" else 0
        gates = 1 if self.mode == "pure" else 3
        solution = 2 * h if self.mode == "pure" else 4 * h  # (decay, h') or (2 tanh, gate, h')
        return Footprint(
            hoisted_products=((self.input_size, first),),
            loop_products=tuple(loop),
            elementwise=8 * h,
            transcendentals=activations + gates * h,
            saved_values=2 * units * layers + heads + solution,
        )

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this cell, the sparsity mask as nested
        lists (`None` without one)."""
        mask = self._head_masks.get("ff1")
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "mode": self.mode,
            "backbone_activation": self.backbone_activation,
            "backbone_units": self.backbone_units or 128,
            "backbone_layers": len(self.backbone),
            "backbone_dropout": self.backbone_dropout,
            "sparsity_mask": None if mask is None else np.array(mask).T.tolist(),
        }
