"""The fused steps as MLX primitives: lazy, differentiable, compilable."""

import mlx.core as mx

from .._checks import check_choice, check_int
from ..cells.activations import ACTIVATIONS
from ..cells.cfc import MODES
from .library import library

_PER_NEURON = ("v", "cm", "numerator", "denominator")
_PER_SYNAPSE = ("sigma", "mu", "w", "w_erev")


def addmm(c: mx.array | None, a: mx.array, b: mx.array) -> mx.array:
    """``c + a @ b`` as one primitive, as `mlx.core.addmm` computes it (``c`` may be
    ``None``): ``a`` ``(..., K)``, ``b`` ``(K, N)``, ``c`` ``(N,)``, all float32, any
    strides. The products run on the kernels' micro-kernel over every core; their
    gradients too. Raises ``ValueError`` for shapes that do not fit."""
    if a.ndim < 1 or b.ndim != 2 or (c is not None and c.ndim != 1):
        raise ValueError(
            f"[addmm] takes a (..., K), b (K, N) and c (N,) but got a {a.shape}, b {b.shape}"
            f" and c {None if c is None else c.shape}"
        )
    leading = a.shape[:-1]
    flat = a.reshape(-1, a.shape[-1])
    return library("addmm").addmm(flat, b, c).reshape(*leading, b.shape[1])


def ltc_step(
    v: mx.array,
    cm: mx.array,
    numerator: mx.array,
    denominator: mx.array,
    synapses: dict[str, mx.array],
    unfolds: int,
) -> mx.array:
    r"""All ``unfolds`` semi-implicit sub-steps of an LTC time step, as one primitive.

    Per unfold, for neurons ``j`` and synapses ``s = (i -> j)``:
    ``a_s = sigmoid(sigma_s (v_i - mu_s))`` and
    ``v_j <- (cm_j v_j + numerator_j + sum_s w_erev_s a_s) / (cm_j + denominator_j +
    sum_s w_s a_s)``.

    Args:
        v: The membrane potentials, float32 ``(B, N)``.
        cm: The capacitance over the sub-step length, float32 ``(B, N)``.
        numerator: The leak and the sensory sums, float32 ``(B, N)``.
        denominator: The leak, the sensory sums and the epsilon, float32 ``(B, N)``.
        synapses: ``pre`` and ``post`` (int32 neuron indices) and ``sigma``, ``mu``,
            ``w``, ``w_erev`` (float32), all ``(S,)``.
        unfolds: Sub-steps, at least 1.

    Differentiable in everything but the indices. Raises ``RuntimeError`` when the
    kernels are unavailable (see [`unavailable_reason`][ncps_mlx.kernels.unavailable_reason]).
    """
    native = library("ltc_step")
    per_neuron = dict(zip(_PER_NEURON, (v, cm, numerator, denominator), strict=True))
    for name, value in per_neuron.items():
        if value.shape != v.shape or v.ndim != 2 or value.dtype != mx.float32:
            raise ValueError(
                f"[ltc_step] '{name}' must be float32 of the state's shape (B, N) = "
                f"{v.shape} but is {value.dtype} {value.shape}"
            )
    count = synapses["pre"].shape
    for name in ("pre", "post", *_PER_SYNAPSE):
        dtype = mx.int32 if name in ("pre", "post") else mx.float32
        value = synapses[name]
        if value.shape != count or value.ndim != 1 or value.dtype != dtype:
            raise ValueError(
                f"[ltc_step] synapse '{name}' must be {dtype} of shape (S,) = {count} but "
                f"is {value.dtype} {value.shape}"
            )
    check_int("ltc_step", "unfolds", unfolds)
    args = [synapses[name] for name in ("pre", "post", *_PER_SYNAPSE)]
    return native.ltc_step(v, cm, numerator, denominator, *args, unfolds)


def cfc_step(
    projected: mx.array,
    h: mx.array,
    dt: mx.array,
    weights: list[mx.array],
    layout: list[tuple[int, int]],
    mode: str = "default",
    activation: str = "lecun_tanh",
) -> mx.array:
    r"""One step of a chain of CfC units as one primitive: a [`CfCCell`][ncps_mlx.cells.CfCCell]
    (one unit) or the layers of a [`WiredCfCCell`][ncps_mlx.cells.WiredCfCCell] (one unit each).

    Unit ``u`` with state ``h_u`` (columns of ``h``) computes ``pre = projected + h_0 @ Wh``
    for the first unit and ``pre = bx + h'_{u-1} @ Wx + h_u @ Wh`` for the others
    (``h'_{u-1}`` the previous unit's new state). With ``k >= 1`` backbone layers,
    ``z = act(pre)``, then ``z = act(b_i + z @ W_i)`` for the ``k - 1`` further layers, and
    the heads are ``c + z @ Wc``; with none, the heads are ``pre``. The heads give the new
    state as in [`CfCCell`][ncps_mlx.cells.CfCCell] (``pure`` mode: ``-A exp(-dt (|w_tau| + |u|))
    u + A`` with ``u`` the heads), with the rational tanh and sigmoid of
    [`ncps_mlx.ops`][ncps_mlx.ops].

    Args:
        projected: The first unit's input share of ``pre``, float32 ``(B, width_0)``.
        h: The state, float32 ``(B, N)``: the units' states side by side.
        dt: Elapsed time, float32 ``(B, 1)`` (a broadcast view is fine).
        weights: Per unit, in order: ``Wx`` ``(n_{u-1}, width)`` and ``bx`` ``(width,)``
            (not for the first unit), ``Wh`` ``(n_u, width)``, then with a backbone its
            further layers' ``W_i`` ``(width, width)`` and ``b_i``, and ``Wc``
            ``(width, heads)`` and ``c``; in ``pure`` mode ``w_tau`` and ``A`` ``(1, n_u)``
            last. ``heads`` is ``4 n_u`` (``n_u`` in ``pure`` mode). All float32; matrices
            may be transposed views.
        layout: ``(n_u, k_u)`` per unit: its state size and backbone layers.
        mode: ``"default"``, ``"pure"`` or ``"no_gate"``.
        activation: The backbone's: ``"lecun_tanh"``, ``"tanh"``, ``"relu"``, ``"silu"``
            or ``"gelu"``.

    Returns:
        The new state ``(B, N)``. Differentiable in every input. Raises ``ValueError`` for
        shapes that do not fit the layout and ``RuntimeError`` when the kernels are
        unavailable (see [`unavailable_reason`][ncps_mlx.kernels.unavailable_reason]).
    """
    native = library("cfc_step")
    return native.cfc_step(projected, h, dt, list(weights), *chain_codes(layout, mode, activation))


def cfc_sequence(
    projected: mx.array,
    h: mx.array,
    dt: mx.array,
    weights: list[mx.array],
    layout: list[tuple[int, int]],
    mode: str = "default",
    activation: str = "lecun_tanh",
    keep_cache: bool = True,
    memory: tuple[mx.array, mx.array, mx.array] | None = None,
) -> mx.array | tuple[mx.array, mx.array]:
    """Every step of a sequence of [`cfc_step`][ncps_mlx.kernels.cfc_step] as one primitive:
    ``projected`` ``(B, T, width_0)`` and ``dt`` ``(B, T, 1)`` (a broadcast view is fine) per step,
    ``h`` ``(B, N)`` the state before the first. Returns the state after each step,
    ``(B, T, N)``, differentiable in every input; the backward pass sums each weight's
    gradient over the steps inside the kernel.

    With ``keep_cache`` the forward pass keeps every step's pre-activations for a
    backward pass (``T x B x`` the layers' widths and heads); without it (inference) it
    keeps none, and a backward pass, if one is asked for, runs it again first.

    ``memory``, ``(z, c, wh_t)``, runs the mixed-memory LSTM
    ([`lstm_step`][ncps_mlx.kernels.lstm_step]) before each step, the chain then starting from its
    ``h'``: ``z`` ``(B, T, 4N)`` its projected input with its bias, ``c`` ``(B, N)`` its first
    memory, ``wh_t`` ``(N, 4N)``. Returns ``(states, cells)`` then, the LSTM's memory after each
    step ``(B, T, N)``."""
    if projected.ndim != 3:
        raise ValueError(
            f"[cfc_sequence] 'projected' must be (B, T, width) but has shape {projected.shape}"
        )
    native = library("cfc_sequence")
    codes = chain_codes(layout, mode, activation)
    if memory is None:
        return native.cfc_step(projected, h, dt, list(weights), *codes, bool(keep_cache))
    states, cells = native.cfc_memory_sequence(
        projected, h, dt, list(weights), *codes, bool(keep_cache), *memory
    )
    return states, cells


def chain_codes(
    layout: list[tuple[int, int]], mode: str, activation: str
) -> tuple[list[int], int, int]:
    """The C++ form of a chain's description: the layout flattened, the mode's and the
    activation's indices. Raises ``ValueError`` for an unknown mode or activation."""
    check_choice("cfc_step", "mode", mode, MODES)
    check_choice("cfc_step", "activation", activation, ACTIVATIONS)
    flat = [int(value) for unit in layout for value in unit]
    return flat, MODES.index(mode), list(ACTIVATIONS).index(activation)


def lstm_step(z: mx.array, h: mx.array, c: mx.array, wh_t: mx.array) -> tuple[mx.array, mx.array]:
    r"""The mixed-memory LSTM step ([`LSTMCell`][ncps_mlx.cells.LSTMCell]) as one primitive:
    ``gates = z + h @ wh_t`` split ``(i, g_i, g_f, g_o)``,
    ``c' = c sigmoid(g_f + 1) + tanh(i) sigmoid(g_i)``, ``h' = tanh(c') sigmoid(g_o)``.

    Args:
        z: The projected input with its bias, float32 ``(B, 4N)``.
        h: The state's output part, float32 ``(B, N)``.
        c: The state's memory part, float32 ``(B, N)``.
        wh_t: The recurrent weight as ``h @ wh_t`` takes it, float32 ``(N, 4N)``.

    Returns:
        ``(h', c')``, differentiable in every input. Raises ``ValueError`` for shapes that
        do not fit and ``RuntimeError`` when the kernels are unavailable.
    """
    h_next, c_next = library("lstm_step").lstm_step(z, h, c, wh_t)
    return h_next, c_next
