"""Fuzzing the Controller: whatever a caller passes, a call answers or refuses cleanly.

Hypothesis draws sequences of calls with inputs around valid ones: nan and inf anywhere,
huge and tiny values, wrong shapes and batch sizes, other dtypes, nested lists, strings;
timespans that are negative, zero, nan, huge or shaped wrong; resets with states of any
kind. Each call must return finite float32 outputs of the right shape, or raise a
``ValueError`` (the input is refused) or a ``NumericsError`` (finite input gave nan or
inf); after a refusal the state is the one before the call. A warning is allowed.
``NCPS_MLX_FUZZ_EXAMPLES`` sets the sequences per model (default 200).
"""

import os
import warnings
from collections import Counter

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ncps_mlx import LTC, CfC, Controller, NumericsError  # noqa: E402
from ncps_mlx.wirings import AutoNCP  # noqa: E402

EXAMPLES = int(os.environ.get("NCPS_MLX_FUZZ_EXAMPLES", "200"))
INPUTS = 3
MODELS = {
    "cfc": lambda: CfC(INPUTS, 8, backbone_units=8),
    "cfc_ncp_mixed": lambda: CfC(INPUTS, AutoNCP(10, 2), mixed_memory=True),
    "ltc_ncp": lambda: LTC(INPUTS, AutoNCP(10, 2)),
    "ltc_euler": lambda: LTC(INPUTS, 6, solver="explicit_euler"),
}
#: Outcomes per model, printed at the end of the run (``pytest -s``).
OUTCOMES: dict[str, Counter] = {}

special = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-30, 65504.0])
number = st.one_of(st.floats(-10, 10), special)


@st.composite
def arrays(draw, width: int = INPUTS) -> object:
    """An input: mostly (2, width) floats, sometimes something else."""
    batch = draw(st.sampled_from([2] * 6 + [None, 1, 3]))
    columns = draw(st.sampled_from([width] * 8 + [width - 1, width + 1, 0]))
    shape = (columns,) if batch is None else (batch, columns)
    size = int(np.prod(shape))
    values = np.array(draw(st.lists(st.floats(-10, 10), min_size=size, max_size=size)))
    if size and draw(st.integers(0, 3)) == 0:  # one special value somewhere
        values[draw(st.integers(0, size - 1))] = draw(special)
    values = values.reshape(shape)
    others = ["float64", "float16", "int", "list", "bool", "3d"]
    form = draw(st.sampled_from(["float32"] * 6 + others))
    if form == "int":
        return np.nan_to_num(values, nan=0, posinf=0, neginf=0).astype(np.int64)
    if form == "list":
        return values.tolist()
    if form == "bool":
        return values > 0
    if form == "3d":
        return values[None]
    with np.errstate(over="ignore"):
        return values.astype(form)


timespans = st.one_of(
    *[st.floats(0.01, 10)] * 4,
    number,
    st.just(None),
    st.just("1.0"),
    st.integers(-3, 3),
    st.lists(st.one_of(st.floats(-1, 10), special), min_size=1, max_size=4).map(np.array),
)
calls = st.lists(
    st.one_of(
        st.tuples(st.just("call"), arrays(), timespans),
        st.tuples(st.just("reset"), st.one_of(st.none(), arrays(8), arrays(10)), st.none()),
    ),
    min_size=1,
    max_size=6,
)


def _same(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is b
    pairs = zip(a, b, strict=True) if isinstance(a, tuple) else [(a, b)]
    return all(np.array_equal(x, y, equal_nan=True) for x, y in pairs)


def _apply(controller: Controller, kind: str, value: object, dt: object) -> str:
    before = controller.state
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unstable timespan warns; that is allowed
            if kind == "reset":
                controller.reset(value)
                return "reset"
            out = controller(value, timespan=dt)
    except (ValueError, NumericsError) as error:
        assert _same(controller.state, before), f"a refused {kind} changed the state"
        return type(error).__name__
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert out.shape[-1] == controller._model.output_size
    return "ok"


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    for name, counts in sorted(OUTCOMES.items()):
        summary = ", ".join(f"{outcome} {count}" for outcome, count in counts.most_common())
        print(f"\ncontroller fuzz {name}: {sum(counts.values())} calls ({summary})", end="")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_call_answers_or_refuses_cleanly(name):
    controller = Controller(MODELS[name]())
    counts = OUTCOMES.setdefault(name, Counter())

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(calls)
    def run(sequence):
        controller.reset()
        for kind, value, dt in sequence:
            counts[_apply(controller, kind, value, dt)] += 1

    run()
