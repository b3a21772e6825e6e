"""The memory estimate against the peak measured directly: a markdown table for the docs.

For each model, batch size and mode (``train``: a compiled train step with Adam and a mean
squared error; ``inference``: a compiled ``make_predict`` call), at 128 steps:
:func:`~ncps_mlx.training.estimate_memory`'s estimate and the seconds it took, the batch
sizes it measured, the peak of the same step measured directly on the model (as a user
would see it: MLX's peak above what was live before, the parameters included, the
largest of three to eight calls), estimate / measured, and ("below") what the line through the two
lower batch sizes measured would have estimated, over measured: what a budget that does
not leave room to measure the batch size asked about would give. The default memory
budget applies, so the estimate measures the batch size asked about whenever it fits in
half of it.

Run: ``python -m benchmarks.memory_table [--batch-sizes 8 32 128 256] [--seq-len 128]
[--models cfc_fc ltc_ncp]``. Run it twice for the cost of a check on a warm compile cache.
"""

import argparse
import gc
import re
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten

from ncps_mlx.training import estimate_memory, make_predict, make_train_step
from ncps_mlx.training.losses import LOSSES

from .workloads import INPUT_SIZE, MODELS, build_mlx

# The models of the table: a short name (for --models) and (description, builder). Add a
# model by adding an entry; the builder returns a fresh batch-first model.
TABLE_MODELS: dict[str, tuple[str, Callable[[], Any]]] = {
    name: (spec.describe(), partial(build_mlx, spec)) for name, spec in MODELS.items()
}
GUIDE = Path(__file__).parents[1] / "docs" / "guide" / "custom_cells.md"


def guide_cell() -> type:
    """The cell of the guide "Writing your own cell" (its first sample), defined there once."""
    sample = re.search(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S).group(1)
    namespace: dict[str, Any] = {}
    exec(compile(sample, str(GUIDE), "exec"), namespace)
    return namespace["ContinuousGRUCell"]


def _custom_model() -> Any:
    from ncps_mlx import RNN

    return RNN(guide_cell()(INPUT_SIZE, 64), proj_size=8)


TABLE_MODELS["custom_gru"] = (
    f"RNN(ContinuousGRUCell({INPUT_SIZE}, 64), proj_size=8), the custom-cell guide's",
    _custom_model,
)
BATCH_SIZES = (8, 32, 128, 256)
SEQ_LEN = 128
MODES = ("train", "inference")
_MIB = 2**20


def measured_peak(model: Any, batch_size: int, seq_len: int, train: bool) -> int:
    """Peak bytes of compiled calls on ``model``, the parameters included: the largest of
    three calls, and of more (up to eight) while they take less than a second in all."""
    gc.collect()
    mx.clear_cache()  # a cached buffer is counted whole, however little of it is used
    params = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    live = mx.get_active_memory() - params
    x = mx.random.normal((batch_size, seq_len, model.input_size))
    if train:
        optimizer = optim.Adam(learning_rate=1e-3)
        optimizer.init(model.trainable_parameters())
        y = mx.random.normal((batch_size, seq_len, model.output_size))
        step = make_train_step(model, optimizer, LOSSES["mse"])
        mx.eval(x, y, optimizer.state)
        call = partial(step, x, y)
    else:
        predict = make_predict(model)
        mx.eval(x)

        def call() -> None:
            mx.eval(predict(x))

    peak, calls, start = 0, 0, time.perf_counter()
    gc.disable()  # a collection during a call could free arrays counted in `live`
    try:
        while calls < 3 or (calls < 8 and time.perf_counter() - start < 1):
            mx.reset_peak_memory()
            call()
            peak = max(peak, mx.get_peak_memory() - live)
            calls += 1
    finally:
        gc.enable()
    return peak


def table_rows(names: list[str], batch_sizes: list[int], seq_len: int) -> Iterator[str]:
    """One markdown row per model, mode and batch size."""
    for name in names:
        description, build = TABLE_MODELS[name]
        for mode in MODES:
            train = mode == "train"
            for batch_size in batch_sizes:
                mx.random.seed(0)
                model = build()
                mx.eval(model.parameters())
                start = time.perf_counter()
                estimate = estimate_memory(model, batch_size, seq_len, train=train)
                seconds = time.perf_counter() - start
                peak = measured_peak(model, batch_size, seq_len, train)
                sizes = ", ".join(str(b) for b, _ in estimate.measured)
                below = _from_the_rungs_below(estimate)
                yield (
                    f"| {description} | {mode} | {batch_size} | {sizes} | "
                    f"{estimate.total / _MIB:.1f} | {peak / _MIB:.1f} | "
                    f"{estimate.total / peak:.2f} | "
                    f"{'-' if below is None else f'{below / peak:.2f}'} | {seconds:.1f} |"
                )


def _from_the_rungs_below(estimate: Any) -> float | None:
    """The estimate the line through the two rungs below the top one gives at the batch
    size asked about: what a budget too small to measure the top rung would leave."""
    if len(estimate.measured) < 3:
        return None
    (low, low_bytes), (high, high_bytes) = estimate.measured[-3:-1]
    return high_bytes + (high_bytes - low_bytes) / (high - low) * (estimate.batch_size - high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN)
    parser.add_argument("--models", nargs="+", choices=list(TABLE_MODELS), default=None)
    args = parser.parse_args()
    print(
        "| model | mode | batch | measured at | estimate MiB | measured MiB | ratio | "
        "below | check s |\n|---|---|---:|---|---:|---:|---:|---:|---:|",
        flush=True,
    )
    for row in table_rows(args.models or list(TABLE_MODELS), args.batch_sizes, args.seq_len):
        print(row, flush=True)


if __name__ == "__main__":
    main()
