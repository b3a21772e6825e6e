"""A process that calls the fused kernels' entry points with the cases it is sent.

Run by ``tests/test_kernel_fuzz.py``: each case arrives as a length-prefixed pickle on
stdin, ``(entry point, arguments)``, and its outcome goes back the same way: ``"ok"`` or
the name of the exception raised. A crash ends the process, which the test sees as the
pipe closing, so a segfault or an abort is a failure of the case, not of the test run.

Arrays come as :class:`Spec` values and are built here as the entry point takes them:
MLX arrays (plain, transposed, strided or broadcast views) or NumPy arrays.
"""

import ctypes
import pickle
import struct
import sys
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np


@dataclass(frozen=True)
class Spec:
    """An array to build in the worker: ``values`` laid out as ``view`` says.

    ``view``: ``"plain"``, ``"transposed"`` (a transposed view of the same values),
    ``"strided"`` (every other column of a wider array), ``"broadcast"`` (the first row
    broadcast), ``"huge"`` (a zero broadcast to ``shape``, no memory behind it) or
    ``"numpy"`` (a NumPy array, for the direct forms).
    """

    values: np.ndarray
    view: str = "plain"
    shape: tuple[int, ...] = ()


def build(spec: Any) -> Any:
    if isinstance(spec, list):
        return [build(item) for item in spec]
    if isinstance(spec, dict):
        return {key: build(value) for key, value in spec.items()}
    if not isinstance(spec, Spec):
        return spec
    a = spec.values
    if spec.view == "numpy":
        return a
    if spec.view == "huge":
        return mx.broadcast_to(mx.zeros((1,) * len(spec.shape), dtype=mx.float32), spec.shape)
    if spec.view == "transposed" and a.ndim == 2:
        return mx.array(np.ascontiguousarray(a.T)).T
    if spec.view == "strided" and a.ndim >= 1:
        return mx.array(np.repeat(a, 2, axis=-1))[..., ::2]
    if spec.view == "broadcast" and a.ndim == 2 and a.shape[0] > 0:
        return mx.broadcast_to(mx.array(a[:1]), a.shape)
    return mx.array(a)


def _entry_points() -> dict[str, Any]:
    from ncps_mlx import kernels
    from ncps_mlx.kernels import direct
    from ncps_mlx.kernels.library import library

    native = library("fuzz")

    def graph(step):
        def run(*args, **kwargs):
            out = step(*args, **kwargs)
            mx.eval(out)
            # The backward pass too: a gradient of the sum in every float input.
            floats = [i for i, a in enumerate(args) if isinstance(a, mx.array)]
            floats = [i for i in floats if args[i].dtype == mx.float32]
            if floats:
                loss = lambda *xs: step(*_replace(args, floats, xs), **kwargs).sum()  # noqa: E731
                mx.eval(mx.grad(loss, argnums=list(range(len(floats))))(*[args[i] for i in floats]))

        return run

    return {
        "segfault": lambda: ctypes.string_at(0),  # proves the harness sees a crash
        "kernels.ltc_step": graph(_ltc_wrapper(kernels.ltc_step)),
        "library.ltc_step": graph(native.ltc_step),
        "kernels.cfc_step": graph(kernels.cfc_step),
        "library.cfc_step": graph(native.cfc_step),
        "direct.ltc_step": direct.ltc_step,
        "library.ltc_step_direct": native.ltc_step_direct,
        "direct.cfc_step": direct.cfc_step,
        "library.cfc_step_direct": native.cfc_step_direct,
        "direct.synapse_sums": direct.synapse_sums,
        "library.synapse_sums_direct": native.synapse_sums_direct,
        "direct.lstm_step": direct.lstm_step,
        "library.lstm_step_direct": native.lstm_step_direct,
        "kernels.cfc_sequence": graph(kernels.cfc_sequence),
        "library.cfc_memory_sequence": graph(_joined(native.cfc_memory_sequence)),
        "kernels.lstm_step": graph(_joined(kernels.lstm_step)),
        "library.lstm_step": graph(_joined(native.lstm_step)),
        "kernels.addmm": graph(kernels.addmm),
        "library.addmm": graph(native.addmm),
        "kernels.set_threads": _then_restored(kernels.set_threads),
        "library.set_thread_count": _then_restored(native.set_thread_count),
    }


def _joined(step):
    # Two outputs ((h', c'), or states and cells) as one array, so that the gradient of
    # its sum reaches both.
    return lambda *args: mx.concatenate(step(*args), axis=-1)


def _then_restored(set_count):
    from ncps_mlx import kernels

    def run(count):
        before = kernels.threads()
        try:
            set_count(count)
            mx.eval(kernels.addmm(None, mx.ones((40, 3)), mx.ones((3, 70))))
        finally:
            kernels.set_threads(before)

    return run


def _ltc_wrapper(ltc_step):
    # kernels.ltc_step takes the synapses as a dict: here they come after the state.
    names = ("pre", "post", "sigma", "mu", "w", "w_erev")

    def step(v, cm, numerator, denominator, *rest):
        *synapses, unfolds = rest
        synapses = dict(zip(names, synapses, strict=True))
        return ltc_step(v, cm, numerator, denominator, synapses, unfolds)

    return step


def _replace(args: tuple, positions: list[int], values: tuple) -> list:
    args = list(args)
    for position, value in zip(positions, values, strict=True):
        args[position] = value
    return args


def _read(stream) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        return None
    return pickle.loads(stream.read(struct.unpack("<Q", header)[0]))


def _write(stream, value: Any) -> None:
    data = pickle.dumps(value)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def main() -> None:
    mx.set_default_device(mx.cpu)  # the kernels' device (a Mac's default is the GPU)
    entries = _entry_points()
    while (case := _read(sys.stdin.buffer)) is not None:
        name, args, kwargs = case
        try:
            entries[name](*build(args), **build(kwargs))
            outcome = "ok"
        except Exception as error:  # every clean refusal counts: only a crash fails
            outcome = type(error).__name__
        _write(sys.stdout.buffer, outcome)


if __name__ == "__main__":
    # Through the module's own name: the cases are pickled as its Spec, not __main__'s.
    from tests.kernel_fuzz_worker import main as run

    run()
