"""The reference-parity configuration matrix, as plain data.

Shared by ``tests/fixtures/make_parity_fixtures.py`` (which runs the reference, ncps 1.0.1
on PyTorch) and ``tests/test_parity.py`` (which runs ncps_mlx against the stored or live
reference). Nothing here imports torch or mlx: a case names a model class, its constructor
arguments and how the layer is called; :func:`build_units` and :func:`make_inputs` turn it
into a wiring and into numpy inputs the same way on both sides.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

import numpy as np

Timespans = Literal["bt", "bt1", "scalar"] | None

INPUT_SIZE = 5
BATCH = 3
STEPS = 7
ACTIVATIONS = ("lecun_tanh", "tanh", "relu", "silu", "gelu")
MODES = ("default", "pure", "no_gate")
# Scalar timespan of the "scalar" cases: not 1.0, so the timespan path is exercised.
SCALAR_TIMESPAN = 0.7


@dataclass(frozen=True)
class Case:
    """One configuration of a CfC or LTC layer and one way of calling it.

    Attributes:
        id: Readable, unique name; also the fixture's file name.
        model: ``"CfC"`` or ``"LTC"``.
        units: Number of units, or a wiring ``{"class": name, "args": [...], "kwargs":
            {...}}`` built by :func:`build_units`.
        kwargs: Further constructor arguments (identical for ncps and ncps_mlx).
        batch: Batch size, or ``None`` for unbatched (time, features) input.
        steps: Sequence length.
        hx: Whether an initial state (a pair ``(h, c)`` with mixed memory) is given.
        timespans: ``None`` (the default 1 per step), ``"bt"`` / ``"bt1"`` for per-sample
            timespans of shape (B, T) / (B, T, 1) laid out like the input, or ``"scalar"``.
        seed: Seed of the reference weights and of the inputs; derived from ``id``.
    """

    id: str
    model: Literal["CfC", "LTC"]
    units: int | dict[str, Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    batch: int | None = BATCH
    steps: int = STEPS
    hx: bool = False
    timespans: Timespans = None
    seed: int = -1

    def __post_init__(self) -> None:
        if self.seed < 0:  # from the id, so adding a case does not reseed the others
            object.__setattr__(self, "seed", zlib.crc32(self.id.encode()) % 2**31)

    @property
    def batch_first(self) -> bool:
        return self.kwargs.get("batch_first", True)

    @property
    def mixed_memory(self) -> bool:
        return self.kwargs.get("mixed_memory", False)

    @property
    def per_sample(self) -> bool:
        """Whether the reference must run one sample at a time (its batched timespans are
        broken: the per-step slice (B,) broadcasts against (B, H))."""
        return self.timespans is not None and self.batch is not None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def wiring(name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"class": name, "args": list(args), "kwargs": kwargs}


def build_units(case: Case, wirings: ModuleType) -> Any:
    """The case's ``units`` argument, with a fresh wiring from ``wirings`` (``ncps.wirings``
    or ``ncps_mlx.wirings``): a wiring is built by the layer, so it cannot be shared."""
    if isinstance(case.units, int):
        return case.units
    spec = case.units
    return getattr(wirings, spec["class"])(*spec["args"], **spec["kwargs"])


def _layout(case: Case, shape: tuple[int, ...]) -> tuple[int, ...]:
    """(B, T, ...) in the case's input layout: (T, B, ...) time-major, (T, ...) unbatched."""
    if case.batch is None:
        return shape[1:]
    return shape if case.batch_first else (shape[1], shape[0], *shape[2:])


def make_inputs(case: Case, state_size: int) -> dict[str, np.ndarray]:
    """Inputs of the case as float32 numpy arrays: ``x`` and, where the case has them,
    ``h0``, ``c0`` (initial states) and ``timespans`` (0-d for a scalar)."""
    rng = np.random.RandomState(case.seed)
    batch = case.batch or 1
    x = rng.normal(size=(batch, case.steps, INPUT_SIZE))
    inputs = {"x": x.reshape(_layout(case, x.shape))}
    states = ("h0", "c0") if case.mixed_memory else ("h0",)
    for name in states if case.hx else ():
        state = 0.5 * rng.normal(size=(batch, state_size))
        inputs[name] = state if case.batch is not None else state[0]
    if case.timespans == "scalar":
        inputs["timespans"] = np.asarray(SCALAR_TIMESPAN)
    elif case.timespans is not None:
        # Positive (LTC divides by them) and spread out so a swapped sample would show.
        spans = rng.uniform(0.2, 2.0, size=(batch, case.steps))
        spans = spans[..., None] if case.timespans == "bt1" else spans
        inputs["timespans"] = spans.reshape(_layout(case, spans.shape))
    return {name: value.astype(np.float32) for name, value in inputs.items()}


def loss_weights(case: Case, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The fixed random ``r`` of the loss ``sum(y r_y) + sum(h r_h) (+ sum(c r_c))``."""
    rng = np.random.RandomState(case.seed + 1)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}


def _cfc(id: str, units: int | dict = 12, **kw: Any) -> Case:
    call = {k: kw.pop(k) for k in ("batch", "steps", "hx", "timespans") if k in kw}
    if isinstance(units, int):
        kw.setdefault("backbone_units", 16)
    return Case(id, "CfC", units, kw, **call)


def _ltc(id: str, units: int | dict = 10, **kw: Any) -> Case:
    call = {k: kw.pop(k) for k in ("batch", "steps", "hx", "timespans") if k in kw}
    return Case(id, "LTC", units, kw, **call)


def _cfc_grid() -> list[Case]:
    """Every mode with 0-3 backbone layers; activations rotate so each occurs 2-3 times."""
    cases = []
    for i, (mode, layers) in enumerate((m, n) for m in MODES for n in range(4)):
        act = ACTIVATIONS[i % len(ACTIVATIONS)]
        kw = {"mode": mode, "activation": act, "backbone_layers": layers}
        cases.append(_cfc(f"cfc-{mode}-l{layers}-{act}", units=8 + i % 3 * 4, **kw))
    return cases


def _cfc_variants() -> list[Case]:
    return [
        _cfc("cfc-dropout-l3", backbone_layers=3, backbone_dropout=0.3),
        _cfc(
            "cfc-pure-dropout-l2-relu",
            mode="pure",
            activation="relu",
            backbone_layers=2,
            backbone_dropout=0.5,
        ),
        _cfc("cfc-proj", proj_size=3),
        _cfc("cfc-proj-noseq", proj_size=4, return_sequences=False, mode="no_gate"),
        _cfc("cfc-noseq", return_sequences=False),
        _cfc("cfc-time-major", batch_first=False, activation="silu"),
        _cfc("cfc-unbatched", batch=None),
        _cfc("cfc-unbatched-hx-ts", batch=None, hx=True, timespans="bt", mode="pure"),
        _cfc("cfc-hx", hx=True, activation="gelu"),
        _cfc("cfc-mixed", mixed_memory=True),
        _cfc("cfc-mixed-hx", mixed_memory=True, hx=True, mode="no_gate"),
        _cfc("cfc-mixed-unbatched-hx", mixed_memory=True, hx=True, batch=None),
        _cfc("cfc-ts-bt", timespans="bt"),
        _cfc("cfc-ts-bt1", timespans="bt1", backbone_layers=2),
        _cfc("cfc-ts-scalar", timespans="scalar"),
        _cfc("cfc-pure-ts-bt", mode="pure", timespans="bt", activation="tanh"),
        _cfc("cfc-no_gate-ts-bt1", mode="no_gate", timespans="bt1", backbone_layers=0),
        _cfc("cfc-time-major-ts-bt", batch_first=False, timespans="bt", hx=True),
        _cfc(
            "cfc-time-major-ts-bt1-noseq",
            batch_first=False,
            timespans="bt1",
            return_sequences=False,
            mode="pure",
        ),
        _cfc("cfc-mixed-ts-proj", mixed_memory=True, timespans="bt", proj_size=2, hx=True),
    ]


def _wired_cfc() -> list[Case]:
    return [
        _cfc("wcfc-autoncp", wiring("AutoNCP", 12, 3)),
        _cfc(
            "wcfc-autoncp-pure-s7",
            wiring("AutoNCP", 14, 4, sparsity_level=0.3, seed=7),
            mode="pure",
        ),
        _cfc(
            "wcfc-autoncp-no_gate-ts",
            wiring("AutoNCP", 10, 2, seed=123),
            mode="no_gate",
            timespans="bt",
        ),
        _cfc("wcfc-ncp-no_gate", wiring("NCP", 5, 4, 2, 3, 2, 3, 2, seed=11), mode="no_gate"),
        _cfc(
            "wcfc-ncp-hx-noseq", wiring("NCP", 6, 3, 3, 2, 2, 1, 2), hx=True, return_sequences=False
        ),
        _cfc("wcfc-fc", wiring("FullyConnected", 8, 3, erev_init_seed=5)),
        _cfc(
            "wcfc-fc-pure-noself", wiring("FullyConnected", 9, self_connections=False), mode="pure"
        ),
        _cfc("wcfc-random", wiring("Random", 10, 4, sparsity_level=0.5, random_seed=3)),
        _cfc(
            "wcfc-random-pure-ts-bt1",
            wiring("Random", 9, 2, 0.3, random_seed=42),
            mode="pure",
            timespans="bt1",
        ),
        _cfc(
            "wcfc-autoncp-mixed-proj",
            wiring("AutoNCP", 12, 3, seed=99),
            mixed_memory=True,
            proj_size=2,
        ),
        _cfc(
            "wcfc-autoncp-time-major-unbatched",
            wiring("AutoNCP", 11, 2, seed=5),
            batch_first=False,
            batch=None,
            hx=True,
        ),
    ]


def _ltc_cases() -> list[Case]:
    return [
        _ltc("ltc-fc-int"),
        _ltc("ltc-fc-int-unfolds1-explicit", 8, ode_unfolds=1, implicit_param_constraints=False),
        _ltc(
            "ltc-fc-wiring-noself",
            wiring("FullyConnected", 8, 3, erev_init_seed=9, self_connections=False),
            ode_unfolds=3,
        ),
        _ltc("ltc-autoncp", wiring("AutoNCP", 12, 3), ode_unfolds=3),
        _ltc(
            "ltc-autoncp-explicit-s9",
            wiring("AutoNCP", 14, 4, sparsity_level=0.4, seed=9),
            implicit_param_constraints=False,
        ),
        _ltc("ltc-ncp-unfolds1", wiring("NCP", 5, 4, 2, 3, 2, 3, 2, seed=11), ode_unfolds=1),
        _ltc(
            "ltc-ncp-explicit",
            wiring("NCP", 6, 3, 3, 2, 2, 1, 2),
            implicit_param_constraints=False,
            ode_unfolds=3,
        ),
        _ltc("ltc-random", wiring("Random", 10, 4, sparsity_level=0.5, random_seed=3)),
        _ltc("ltc-random-dense", wiring("Random", 8, 2, random_seed=17), ode_unfolds=1),
        _ltc("ltc-map-linear-none", input_mapping="linear", output_mapping=None),
        _ltc(
            "ltc-map-none-linear",
            wiring("AutoNCP", 12, 3, seed=3),
            input_mapping=None,
            output_mapping="linear",
        ),
        _ltc("ltc-map-none-none", input_mapping=None, output_mapping=None, ode_unfolds=3),
        _ltc(
            "ltc-map-affine-linear-explicit",
            input_mapping="affine",
            output_mapping="linear",
            implicit_param_constraints=False,
        ),
        _ltc("ltc-map-linear-affine", input_mapping="linear", output_mapping="affine"),
        _ltc("ltc-mixed", mixed_memory=True),
        _ltc("ltc-mixed-hx", wiring("AutoNCP", 12, 3), mixed_memory=True, hx=True),
        _ltc("ltc-hx", hx=True, ode_unfolds=3),
        _ltc("ltc-noseq", wiring("AutoNCP", 12, 4, seed=77), return_sequences=False),
        _ltc("ltc-time-major", batch_first=False),
        _ltc("ltc-unbatched", batch=None, ode_unfolds=3),
        _ltc("ltc-unbatched-mixed-hx-ts", batch=None, mixed_memory=True, hx=True, timespans="bt1"),
        _ltc("ltc-ts-bt", timespans="bt"),
        _ltc("ltc-ts-bt1", wiring("AutoNCP", 12, 3), timespans="bt1", ode_unfolds=3),
        _ltc("ltc-ts-scalar", timespans="scalar"),
        _ltc(
            "ltc-ts-bt-explicit-unfolds1",
            timespans="bt",
            implicit_param_constraints=False,
            ode_unfolds=1,
        ),
        _ltc("ltc-time-major-ts-bt", batch_first=False, timespans="bt", hx=True),
        _ltc(
            "ltc-time-major-ts-bt1-noseq",
            wiring("NCP", 5, 4, 2, 3, 2, 3, 2),
            batch_first=False,
            timespans="bt1",
            return_sequences=False,
        ),
    ]


CASES: list[Case] = _cfc_grid() + _cfc_variants() + _wired_cfc() + _ltc_cases()
CASES_BY_ID: dict[str, Case] = {case.id: case for case in CASES}
assert len(CASES_BY_ID) == len(CASES), "case ids must be unique"
