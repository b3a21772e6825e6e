"""What the monitor costs a real training loop.

Trains ``CfC(16, AutoNCP(64, 8))`` (batch 32, 128 steps, Adam) through the compiled train
step, alternating blocks of steps without and with a :class:`~ncps_mlx.monitor.Monitor`
at its default interval, and reports the median step time of each and their ratio. Two
direct measurements back the ratio up, since step-time noise on a shared machine is
larger than the effect: the cost of one background sample (which holds the interpreter
for that long every interval) and the cost of the ``step()`` wrapper itself.

Run: ``python -m benchmarks.monitor_overhead [--rounds 6] [--steps 10]``.
"""

import argparse
import json
import statistics
import time
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

from ncps_mlx import CfC
from ncps_mlx.monitor import Monitor
from ncps_mlx.training import make_train_step
from ncps_mlx.wirings import AutoNCP


def _loop(batch: int, seq_len: int, units: int):
    mx.random.seed(0)
    model = CfC(16, AutoNCP(units, 8))
    step = make_train_step(model, optim.Adam(1e-3), nn.losses.mse_loss)
    x = mx.random.normal((batch, seq_len, 16))
    y = mx.random.normal((batch, seq_len, 8))
    return model, lambda: step(x, y)


def _block(train, steps: int, monitor: Monitor | None, batch: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        if monitor is None:
            mx.eval(train())
        else:
            with monitor.step(samples=batch) as record:
                record.loss = train()
        times.append(time.perf_counter() - start)
    return times


def _cost_of(call, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def measure(
    rounds: int = 6, steps: int = 10, batch: int = 32, seq_len: int = 128, units: int = 64,
    interval: float = 0.5,
) -> dict[str, Any]:  # fmt: skip
    """Step times without and with the monitor, and the monitor's direct costs."""
    model, train = _loop(batch, seq_len, units)
    for _ in range(3):
        mx.eval(train())  # compile and warm up
    plain, monitored = [], []
    monitor = Monitor(interval=interval, model=model, seq_len=seq_len)
    with monitor:
        for _ in range(rounds):
            plain += _block(train, steps, None, batch)
            monitored += _block(train, steps, monitor, batch)
        sample_cost = _cost_of(monitor._sample, 50)

    def empty_step():
        with monitor.step(samples=batch):
            pass

    wrapper_cost = _cost_of(empty_step, 200)
    plain_median, monitored_median = statistics.median(plain), statistics.median(monitored)
    return {
        "workload": f"CfC(16, AutoNCP({units}, 8)) train step, batch {batch}, {seq_len} steps",
        "interval_s": interval,
        "backends": [b.name for b in monitor.backends],
        "steps_each": len(plain),
        "median_step_s_without": plain_median,
        "median_step_s_with": monitored_median,
        "overhead_from_step_times": monitored_median / plain_median - 1,
        "sample_cost_s": sample_cost,
        "sampling_share_of_time": sample_cost / interval,
        "step_wrapper_cost_s": wrapper_cost,
        "direct_overhead": wrapper_cost / plain_median + sample_cost / interval,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(measure(args.rounds, args.steps), indent=2))


if __name__ == "__main__":
    main()
