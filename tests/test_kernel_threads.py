"""The kernels on every core: the same bits for any thread count, and the count as the
process's CPUs or NCPS_MLX_THREADS say."""

import os
import subprocess
import sys
import textwrap

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ncps_mlx import LTC, CfC, kernels
from ncps_mlx.kernels import cores
from ncps_mlx.wirings import AutoNCP
from tests.kernel_checks import KERNEL_MARKS

pytestmark = KERNEL_MARKS

# Batches and widths with several pieces of every kind: batch rows (8 for the CfC and
# LSTM, 16 for the LTC) with a remainder, weight rows (16), a long inner dimension.
MODELS = {
    "cfc-backbone": lambda: CfC(5, 40, backbone_units=48, backbone_layers=2, proj_size=3),
    "cfc-pure-ncp": lambda: CfC(5, AutoNCP(24, 4, seed=1), mode="pure"),
    "cfc-no-gate-mixed": lambda: CfC(5, 20, mode="no_gate", mixed_memory=True),
    "ltc-ncp": lambda: LTC(5, AutoNCP(20, 3, seed=2), ode_unfolds=3),
}


def outputs_and_gradients(name):
    """Bytes of a model's outputs and gradients on a batch of 37 and 9 steps."""
    mx.random.seed(0)
    model = MODELS[name]()
    x = mx.random.normal((37, 9, 5))

    def loss(model, x):
        y, _ = model(x)
        return (y * y).sum()

    value, grads = nn.value_and_grad(model, loss)(model, x)
    found = [value, model(x)[0], *dict(tree_flatten(grads)).values()]
    return [np.array(a).tobytes() for a in found]


def product_and_gradients():
    a, b, c = (mx.random.normal(shape, key=mx.random.key(i)) for i, shape in
               enumerate([(3000, 24), (24, 40), (40,)]))  # fmt: skip
    grads = mx.grad(lambda a, b, c: kernels.addmm(c, a, b).sum(), (0, 1, 2))(a, b, c)
    return [np.array(g).tobytes() for g in (kernels.addmm(c, a, b), *grads)]


@pytest.fixture
def restore_threads():
    before = kernels.threads()
    yield
    kernels.set_threads(before)


@pytest.mark.usefixtures("restore_threads")
@pytest.mark.parametrize("name", [*MODELS, "addmm"])
def test_results_are_bit_identical_for_any_thread_count(name):
    run = product_and_gradients if name == "addmm" else lambda: outputs_and_gradients(name)
    found = {}
    for count in (1, 2, 3, 8):
        kernels.set_threads(count)
        assert kernels.threads() == count
        found[count] = run()
    for count, result in found.items():
        assert result == found[1], f"{count} threads differ from one"


@pytest.mark.usefixtures("restore_threads")
@pytest.mark.parametrize("count", [0, 257, 2.0, True])
def test_a_thread_count_outside_1_to_256_is_refused(count):
    with pytest.raises(ValueError, match=r"\[set_threads\] 'count' must be an int in 1..256"):
        kernels.set_threads(count)


def run_python(code, **environment):
    env = {**os.environ, **environment}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_the_count_is_the_environment_variable_or_the_cpus_this_process_may_use():
    code = "from ncps_mlx import kernels; print(kernels.threads())"
    assert run_python(code, NCPS_MLX_THREADS="3").stdout.strip() == "3"
    default = run_python(code, NCPS_MLX_THREADS="")
    assert default.stdout.strip() == str(cores.available_cpus())
    if hasattr(os, "sched_setaffinity"):
        pinned = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " + code
        assert run_python(pinned, NCPS_MLX_THREADS="").stdout.strip() == "1"


def test_a_bad_environment_variable_names_itself_and_the_kernels_stay_off():
    code = """
        import warnings
        from ncps_mlx import kernels
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(kernels.unavailable_reason())
    """
    found = run_python(code, NCPS_MLX_THREADS="many")
    assert found.returncode == 0, found.stderr
    assert "'NCPS_MLX_THREADS' must be an int in 1..256 but got 'many'" in found.stdout


def test_a_forked_child_runs_the_kernels_without_the_parents_threads():
    # The child inherits the pool's memory but not its threads: it must not wait for them.
    # (The Controller's direct path runs on the calling thread, without MLX's stream.)
    code = """
        import os
        import numpy as np
        from ncps_mlx import CfC, Controller, kernels
        kernels.set_threads(2)
        controller = Controller(CfC(3, 16))
        x = np.random.default_rng(0).standard_normal((32, 3)).astype(np.float32)
        expected = controller(x)
        controller.reset()
        pid = os.fork()
        if pid == 0:
            same = np.array_equal(controller(x), expected)
            os._exit(0 if same and kernels.threads() == 1 else 1)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
    """
    found = run_python(code)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "0"
