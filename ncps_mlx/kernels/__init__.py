"""Fused CPU kernels: whole recurrent steps as single MLX primitives.

On MLX's CPU backend each graph operation costs about 2.5 us whatever its size, and an
LTC or CfC step is dozens of small ones (see :doc:`hardware`). :func:`ltc_step` runs all
ODE unfolds of a semi-implicit LTC step in one C++ primitive, :func:`cfc_step` a CfC
cell's step or all layers of a wired CfC's, each with a hand-written backward pass. They
are compiled on first use (:mod:`ncps_mlx.kernels.build`) and used only where they apply:
the CPU and float32 (and for the LTC the semi-implicit solver). Everywhere else, and
whenever they cannot be built, the cells run the same computation as MLX operations, so
results do not depend on them (the tests check the two against each other and against
the reference).

Set ``NCPS_MLX_KERNELS=0`` to never use or build them.
"""

import contextlib
import importlib.util
import os
import platform
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import mlx.core as mx

from ..errors import see
from . import build
from .build import BuildError

_SOURCES = tuple(
    Path(__file__).with_name(name)
    for name in ("common.h", "dense.h", "ltc.cpp", "cfc.cpp", "lstm.cpp", "module.cpp")
)
_MODULE = "_ncps_kernels"
_module: ModuleType | None = None
_failure: str | None = None
_disabled = False


def _load() -> ModuleType:
    path = build.build(_SOURCES, _MODULE)
    spec = importlib.util.spec_from_file_location(_MODULE, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # One tiny step each: a module built against an MLX whose nanobind ABI differs loads
    # but does not recognise mx.array arguments.
    one, index = mx.ones((1, 1)), mx.zeros((1,), dtype=mx.int32)
    mx.eval(module.ltc_step(one, one, one, one, index, index, *[one[0]] * 4, 1))
    mx.eval(module.cfc_step(mx.ones((1, 4)), one, one, [mx.ones((1, 4))], [1, 0], 0, 0))
    return module


def unavailable_reason() -> str | None:
    """Why the fused kernels cannot be used in this process, or ``None`` if they can.

    The first call builds them if needed (a few seconds, once per installation).
    """
    global _module, _failure
    if os.environ.get("NCPS_MLX_KERNELS", "1") == "0":
        return "disabled by NCPS_MLX_KERNELS=0"
    if platform.system() != "Linux":
        return f"built and verified on Linux only, not on {platform.system()}"
    if _module is None and _failure is None:
        try:
            _module = _load()
        except (BuildError, ImportError, OSError, TypeError) as error:
            _failure = f"could not build the fused kernels: {error}"
            warnings.warn(
                f"ncps_mlx: {_failure}; the cells use the slower MLX graph on the CPU\n"
                + see("kernels-build"),
                RuntimeWarning,
                stacklevel=2,
            )
    return _failure


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the cells as MLX operations only, as on the GPU (used to count graph ops)."""
    global _disabled
    previous, _disabled = _disabled, True
    try:
        yield
    finally:
        _disabled = previous


def usable(dtype: mx.Dtype) -> bool:
    """Whether a step on arrays of ``dtype`` runs fused here and now."""
    return (
        not _disabled
        and dtype == mx.float32
        and mx.default_device().type == mx.cpu
        and unavailable_reason() is None
    )


_PER_NEURON = ("v", "cm", "numerator", "denominator")
_PER_SYNAPSE = ("sigma", "mu", "w", "w_erev")


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
    kernels are unavailable (see :func:`unavailable_reason`).
    """
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"[ltc_step] {reason}")
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
    if not isinstance(unfolds, int) or unfolds < 1:
        raise ValueError(f"[ltc_step] 'unfolds' must be an int >= 1 but got {unfolds!r}")
    args = [synapses[name] for name in ("pre", "post", *_PER_SYNAPSE)]
    return _module.ltc_step(v, cm, numerator, denominator, *args, unfolds)


CFC_MODES = ("default", "pure", "no_gate")
CFC_ACTIVATIONS = ("lecun_tanh", "tanh", "relu", "silu", "gelu")


def cfc_step(
    projected: mx.array,
    h: mx.array,
    dt: mx.array,
    weights: list[mx.array],
    layout: list[tuple[int, int]],
    mode: str = "default",
    activation: str = "lecun_tanh",
) -> mx.array:
    r"""One step of a chain of CfC units as one primitive: a :class:`~ncps_mlx.CfCCell`
    (one unit) or the layers of a :class:`~ncps_mlx.WiredCfCCell` (one unit each).

    Unit ``u`` with state ``h_u`` (columns of ``h``) computes ``pre = projected + h_0 @ Wh``
    for the first unit and ``pre = bx + h'_{u-1} @ Wx + h_u @ Wh`` for the others
    (``h'_{u-1}`` the previous unit's new state). With ``k >= 1`` backbone layers,
    ``z = act(pre)``, then ``z = act(b_i + z @ W_i)`` for the ``k - 1`` further layers, and
    the heads are ``c + z @ Wc``; with none, the heads are ``pre``. The heads give the new
    state as in :class:`~ncps_mlx.CfCCell` (``pure`` mode: ``-A exp(-dt (|w_tau| + |u|))
    u + A`` with ``u`` the heads), with the rational tanh and sigmoid of
    :mod:`ncps_mlx.ops`.

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
        unavailable (see :func:`unavailable_reason`).
    """
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"[cfc_step] {reason}")
    return _module.cfc_step(projected, h, dt, list(weights), *chain_codes(layout, mode, activation))


def chain_codes(
    layout: list[tuple[int, int]], mode: str, activation: str
) -> tuple[list[int], int, int]:
    """The C++ form of a chain's description: the layout flattened, the mode's and the
    activation's indices. Raises ``ValueError`` for an unknown mode or activation."""
    for name, value, choices in (
        ("mode", mode, CFC_MODES),
        ("activation", activation, CFC_ACTIVATIONS),
    ):
        if value not in choices:
            raise ValueError(f"[cfc_step] unknown {name} {value!r}; choose one of {list(choices)}")
    flat = [int(value) for unit in layout for value in unit]
    return flat, CFC_MODES.index(mode), CFC_ACTIVATIONS.index(activation)
