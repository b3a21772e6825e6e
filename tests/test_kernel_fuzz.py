"""Fuzzing the fused kernels' boundary: every entry point, in a worker process.

Hypothesis draws arguments around valid ones (shapes off by one, wrong dtypes, strided,
broadcast and huge views, indices out of range, layouts that overflow an int, bad codes,
unfold counts) and sends each case to a worker process (``kernel_fuzz_worker``) that
calls the entry point. A case passes when the call returns or raises a Python exception;
a crash (a signal, an abort) ends the worker and fails the case, which is reported with
its arguments. ``NCPS_MLX_FUZZ_EXAMPLES`` sets the cases per entry point (default 200).
"""

import os
import pickle
import re
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.kernel_checks import KERNEL_MARKS  # noqa: E402
from tests.kernel_fuzz_worker import Spec  # noqa: E402

pytestmark = KERNEL_MARKS

EXAMPLES = int(os.environ.get("NCPS_MLX_FUZZ_EXAMPLES", "200"))
ROOT = Path(__file__).parents[1]
HUGE = (2**30, 2**31 - 1, -(2**31), 10**8)
#: Outcomes per entry point, printed at the end of the run (``pytest -s``).
OUTCOMES: dict[str, Counter] = {}


class Worker:
    """The worker process, restarted after a crash."""

    def __init__(self):
        self.process = None

    def run(self, case: tuple) -> str:
        if self.process is None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.kernel_fuzz_worker"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        data = pickle.dumps(case)
        try:
            self.process.stdin.write(struct.pack("<Q", len(data)) + data)
            self.process.stdin.flush()
            header = self.process.stdout.read(8)
        except BrokenPipeError:
            header = b""
        if len(header) < 8:
            code = self.process.wait()
            self.process = None
            return f"crash (exit {code})"
        return pickle.loads(self.process.stdout.read(struct.unpack("<Q", header)[0]))

    def close(self):
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait()


@pytest.fixture(scope="module")
def worker():
    process = Worker()
    yield process
    process.close()
    for name, counts in sorted(OUTCOMES.items()):
        summary = ", ".join(f"{outcome} {count}" for outcome, count in counts.most_common())
        print(f"\n{name}: {sum(counts.values())} cases ({summary})", end="")


def check(worker: Worker, name: str, args: list, kwargs: dict | None = None) -> None:
    outcome = worker.run((name, args, kwargs or {}))
    OUTCOMES.setdefault(name, Counter())[outcome] += 1
    assert not outcome.startswith("crash"), f"{name} crashed on {args!r} {kwargs!r}"


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

# --- arrays around valid ones ---------------------------------------------------------


@st.composite
def faults(draw, count: int) -> set[int]:
    """Which of ``count`` arguments a case breaks: none in about half the cases."""
    if draw(st.booleans()):
        return set()
    return draw(st.sets(st.integers(0, count - 1), min_size=1, max_size=2))


@st.composite
def array(draw, shape: tuple[int, ...], broken: bool = False, numpy: bool = False) -> Spec:
    """A float32 array of ``shape``; ``broken``, of another shape, rank or dtype, or a
    huge broadcast view. MLX arrays come plain or as transposed, strided or broadcast
    views."""
    dtype = np.float32
    if broken:
        fault = draw(st.sampled_from(["shape", "rank", "dtype", "huge"]))
        if fault == "shape":
            shape = tuple(max(0, n + draw(st.integers(-1, 1))) for n in shape)
        elif fault == "rank":
            shape = shape[: draw(st.integers(0, max(len(shape) - 1, 0)))] + (1,) * draw(
                st.integers(0, 1)
            )
        elif fault == "dtype":
            dtype = draw(st.sampled_from([np.float16, np.int32, np.float64]))
        elif len(shape) == 2 and not numpy:
            return Spec(np.zeros(shape, np.float32), "huge", (2**16, 2**16))
    offset = draw(st.sampled_from([0.0, 1.0, -1.0, 1e30, np.nan]))
    with np.errstate(all="ignore"):
        values = (offset + np.linspace(-2, 2, int(np.prod(shape)))).reshape(shape).astype(dtype)
    if numpy:
        return Spec(np.ascontiguousarray(values), "numpy")
    view = draw(st.sampled_from(["plain"] * 5 + ["transposed", "strided", "broadcast"]))
    return Spec(values, view)


@st.composite
def indices(draw, count: int, bound: int, broken: bool = False) -> Spec:
    """``count`` int32 indices in ``[0, bound)``; ``broken``, some out of it (near it or
    far), or another count."""
    inside = st.integers(0, bound - 1) if bound > 0 else st.just(0)
    outside = st.one_of(st.integers(-2, -1), st.integers(bound, bound + 2), st.sampled_from(HUGE))
    values = draw(st.lists(inside, min_size=count, max_size=count))
    if broken and draw(st.booleans()) and count:
        values[draw(st.integers(0, count - 1))] = draw(outside)
    elif broken:
        values = values[:-1] if values and draw(st.booleans()) else values + [0]
    view = draw(st.sampled_from(["plain", "plain", "strided"]))
    return Spec(np.array(values, dtype=np.int64).astype(np.int32), view)


@st.composite
def ltc_args(draw) -> list:
    batch, neurons, count = (
        draw(st.integers(0, 3)),
        draw(st.integers(1, 4)),
        draw(st.integers(0, 5)),
    )
    broken = draw(faults(11))
    per_neuron = [draw(array((batch, neurons), k in broken)) for k in range(4)]
    synapses = [draw(indices(count, neurons, k in broken)) for k in (4, 5)]
    synapses += [draw(array((count,), k in broken)) for k in range(6, 10)]
    # No huge unfold count: its forward loop is valid and would run for long (the
    # backward pass's size check has a test of its own).
    unfolds = draw(st.integers(-1, 0)) if 10 in broken else draw(st.integers(1, 3))
    return [*per_neuron, *synapses, unfolds]


@st.composite
def cfc_chain(draw) -> tuple[int, list, list[tuple[int, int]], int, set[int]]:
    """A chain of CfC units as the kernel takes it, and the faults of its case:
    ``(batch, weights, layout, mode, faults)``; faults 0-2 are the step's inputs."""
    mode = draw(st.integers(0, 2))
    units = draw(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 2)), min_size=1, max_size=3))
    shapes, previous = [], None
    for n, layers in units:
        heads = n if mode == 1 else 4 * n
        width = draw(st.integers(1, 3)) if layers else heads
        shapes += ([(previous, width), (width,)] if previous else []) + [(n, width)]
        shapes += [(width, width), (width,)] * max(layers - 1, 0)
        shapes += [(width, heads), (heads,)] if layers else []
        shapes += [(1, n), (1, n)] if mode == 1 else []
        previous = n
    broken = draw(faults(len(shapes) + 5))
    weights = [draw(array(shape, k + 5 in broken)) for k, shape in enumerate(shapes)]
    layout = list(units)
    if 3 in broken:  # a layout that no weights fit, or that overflows an int
        layout[0] = (
            draw(st.sampled_from([-1, 0, *HUGE])),
            draw(st.sampled_from([-1, 0, 1, 2**30])),
        )
    if 4 in broken:
        weights = weights[: draw(st.integers(0, len(weights) - 1))]
    return draw(st.integers(1, 3)), weights, layout, mode, broken


def cfc_inputs(draw, batch: int, units: list, weights: list, broken: set, numpy: bool) -> list:
    width = weights[0].values.shape[-1] if weights and weights[0].values.ndim else 1
    state = sum(n for n, _ in units if 0 < n < 64)
    shapes = ((batch, width), (batch, state), (batch, 1))
    return [draw(array(shape, k in broken, numpy)) for k, shape in enumerate(shapes)]


MODES = ["default", "pure", "no_gate"]
ACTIVATIONS = ["lecun_tanh", "tanh", "relu", "silu", "gelu"]


def codes(draw, mode: int, broken: set) -> tuple[int, int]:
    """The raw mode and activation codes: in range, or (in a broken case) perhaps not."""
    if broken and draw(st.booleans()):
        return draw(st.integers(-1, 3)), draw(st.integers(-1, 5))
    return mode, draw(st.integers(0, 4))


# --- the entry points -----------------------------------------------------------------


def test_a_crash_is_caught_and_the_worker_restarted(worker):
    assert worker.run(("segfault", [], {})).startswith("crash (exit ")
    assert worker.run(("direct.lstm_step", [], {})) == "TypeError"  # a fresh worker


@FUZZ
@given(args=ltc_args())
def test_ltc_step(worker, args):
    check(worker, "kernels.ltc_step", args)
    check(worker, "library.ltc_step", args)


@FUZZ
@given(chain=cfc_chain(), data=st.data())
def test_cfc_step(worker, chain, data):
    batch, weights, layout, mode, broken = chain
    inputs = cfc_inputs(data.draw, batch, layout, weights, broken, numpy=False)
    activation = data.draw(st.sampled_from(ACTIVATIONS + ["swish"]))
    mode_name = data.draw(st.sampled_from([MODES[mode], "bad"])) if broken else MODES[mode]
    check(worker, "kernels.cfc_step", [*inputs, weights, layout, mode_name, activation])
    flat = [value for unit in layout for value in unit]
    check(worker, "library.cfc_step", [*inputs, weights, flat, *codes(data.draw, mode, broken)])


@FUZZ
@given(args=ltc_args(), data=st.data())
def test_ltc_step_direct(worker, args, data):
    per_neuron = [Spec(np.ascontiguousarray(spec.values), "numpy") for spec in args[:4]]
    synapses, unfolds = args[4:10], max(min(args[10], 3), -1)
    out = data.draw(array(per_neuron[0].values.shape, numpy=True))
    names = ("pre", "post", "sigma", "mu", "w", "w_erev")
    check(
        worker, "direct.ltc_step", [*per_neuron, dict(zip(names, synapses, strict=True)), unfolds]
    )
    check(worker, "library.ltc_step_direct", [per_neuron, synapses, unfolds, out])


@FUZZ
@given(chain=cfc_chain(), data=st.data())
def test_cfc_step_direct(worker, chain, data):
    batch, weights, layout, mode, broken = chain
    inputs = cfc_inputs(data.draw, batch, layout, weights, broken, numpy=True)
    out = data.draw(array(inputs[1].values.shape, 2 in broken, numpy=True))
    check(worker, "direct.cfc_step", [*inputs, weights, layout, MODES[mode]])
    flat = [value for unit in layout for value in unit]
    codes_ = codes(data.draw, mode, broken)
    check(worker, "library.cfc_step_direct", [*inputs, weights, flat, *codes_, out])


@FUZZ
@given(data=st.data())
def test_synapse_sums(worker, data):
    batch, features, neurons = (data.draw(st.integers(1, n)) for n in (3, 3, 4))
    count, broken = data.draw(st.integers(0, 5)), data.draw(faults(10))
    x = data.draw(array((batch, features), 0 in broken, numpy=True))
    synapses = [data.draw(indices(count, features, 1 in broken))]
    synapses += [data.draw(indices(count, neurons, 2 in broken))]
    synapses += [data.draw(array((count,), k in broken)) for k in range(3, 7)]
    outputs = [data.draw(array((batch, neurons), k in broken, numpy=True)) for k in (7, 8)]
    names = ("pre", "post", "sigma", "mu", "w", "w_erev")
    neurons_arg = data.draw(st.sampled_from([0, 2**31 - 1])) if 9 in broken else neurons
    check(worker, "direct.synapse_sums", [x, dict(zip(names, synapses, strict=True)), neurons_arg])
    check(worker, "library.synapse_sums_direct", [x, synapses, *outputs])


@FUZZ
@given(data=st.data())
def test_lstm_step(worker, data):
    batch, n, broken = (
        data.draw(st.integers(1, 3)),
        data.draw(st.integers(1, 4)),
        data.draw(faults(6)),
    )
    shapes = ((batch, 4 * n), (batch, n), (batch, n))
    z, h, c = (data.draw(array(shape, k in broken, numpy=True)) for k, shape in enumerate(shapes))
    wh_t = data.draw(array((n, 4 * n), 3 in broken))
    outputs = [data.draw(array((batch, n), k in broken, numpy=True)) for k in (4, 5)]
    check(worker, "direct.lstm_step", [z, h, c, wh_t])
    check(worker, "library.lstm_step_direct", [z, h, c, wh_t, *outputs])


@FUZZ
@given(chain=cfc_chain(), data=st.data())
def test_cfc_sequence(worker, chain, data):
    batch, weights, layout, mode, broken = chain
    steps = data.draw(st.integers(0, 3))
    width = weights[0].values.shape[-1] if weights and weights[0].values.ndim else 1
    state = sum(n for n, _ in layout if 0 < n < 64)
    shapes = ((batch, steps, width), (batch, state), (batch, steps, 1))
    inputs = [data.draw(array(shape, k in broken)) for k, shape in enumerate(shapes)]
    keep_cache = data.draw(st.booleans())
    check(worker, "kernels.cfc_sequence", [*inputs, weights, layout, MODES[mode]],
          {"keep_cache": keep_cache})  # fmt: skip
    flat = [value for unit in layout for value in unit]
    codes_ = codes(data.draw, mode, broken)
    check(worker, "library.cfc_step", [*inputs, weights, flat, *codes_, keep_cache])
    # With the mixed-memory LSTM: z, c and wh_t after the rest, perhaps broken too.
    memory_broken = data.draw(faults(3))
    shapes = ((batch, steps, 4 * state), (batch, state), (state, 4 * state))
    memory = [data.draw(array(shape, k in memory_broken)) for k, shape in enumerate(shapes)]
    check(worker, "library.cfc_memory_sequence",
          [*inputs, weights, flat, *codes_, keep_cache, *memory])  # fmt: skip


@FUZZ
@given(data=st.data())
def test_lstm_step_graph(worker, data):
    batch, n, broken = (
        data.draw(st.integers(0, 3)),
        data.draw(st.integers(0, 4)),
        data.draw(faults(4)),
    )
    shapes = ((batch, 4 * n), (batch, n), (batch, n), (n, 4 * n))
    args = [data.draw(array(shape, k in broken)) for k, shape in enumerate(shapes)]
    check(worker, "kernels.lstm_step", args)
    check(worker, "library.lstm_step", args)


@FUZZ
@given(data=st.data())
def test_addmm(worker, data):
    m, k, n = (data.draw(st.sampled_from([0, 1, 3, 17, 40])) for _ in range(3))
    broken = data.draw(faults(3))
    a, b = data.draw(array((m, k), 0 in broken)), data.draw(array((k, n), 1 in broken))
    c = data.draw(st.one_of(st.none(), array((n,), 2 in broken)))
    check(worker, "kernels.addmm", [c, a, b])
    check(worker, "library.addmm", [a, b, c])


@FUZZ
@given(count=st.one_of(st.integers(-2, 4), st.sampled_from([257, *HUGE])))
def test_set_threads(worker, count):
    check(worker, "kernels.set_threads", [count])
    check(worker, "library.set_thread_count", [count])


# --- the inputs that crashed the kernels before they checked them ----------------------

PRELUDE = """
import mlx.core as mx
from ncps_mlx import kernels
one = mx.ones((2, 3))
def synapses(pre, post):
    return {"pre": mx.array(pre, dtype=mx.int32), "post": mx.array(post, dtype=mx.int32),
            **{k: mx.ones((len(pre),)) for k in ("sigma", "mu", "w", "w_erev")}}
"""
HOSTILE = {
    "post -1": (
        "kernels.ltc_step(one, one, one, one, synapses([0], [-1]), 1)",
        r"'post' holds index -1 outside \[0, 3\)",
    ),
    "post 10**8": (
        "kernels.ltc_step(one, one, one, one, synapses([0], [10**8]), 1)",
        "'post' holds index 100000000",
    ),
    "pre one past the end": (
        "kernels.ltc_step(one, one, one, one, synapses([3], [0]), 1)",
        r"'pre' holds index 3 outside \[0, 3\)",
    ),
    "a layout whose heads overflow an int": (
        "kernels.cfc_step(mx.ones((1, 4)), mx.ones((1, 1)), mx.ones((1, 1)), [mx.ones((1, 4))],"
        " [(2**30, 0)])",
        "a unit's heads is too large",
    ),
    "a state broadcast to 2**32 values": (
        "kernels.ltc_step(*[mx.broadcast_to(mx.ones((1, 1)), (2**16, 2**16))] * 4,"
        " synapses([0], [0]), 1)",
        "the state .* is too large",
    ),
    "a backward pass of 2**30 unfolds": (
        "mx.grad(lambda v: kernels.ltc_step(v, one, one, one, synapses([0], [0]), 2**30)"
        ".sum())(one)",
        "is too large",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_inputs_that_crashed_the_kernels_raise_a_value_error(case):
    code, message = HOSTILE[case]
    program = PRELUDE + f"\ntry:\n    mx.eval({code})\nexcept ValueError as e:\n    print(e)"
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{case}: exit {result.returncode}\n{result.stderr[-2000:]}"
    assert re.search(message, result.stdout), result.stdout
