"""Turn a saved pytest-benchmark JSON into a markdown report and a speed-up plot.

    python -m benchmarks.report RESULT.json [--out docs/benchmarks.md] [--plot docs/benchmarks.png]

RESULT.json comes from ``--benchmark-json`` or ``--benchmark-autosave``; a directory (such
as ``.benchmarks``) means the newest autosaved file in it. Speed-up is the torch median
divided by the mlx median of the same case from the same run: above 1, ncps_mlx is faster.
"""

import argparse
import importlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.workloads import MATMULS, MODELS, MODES, VERSUS_LSTM, build_mlx, matmul_shapes

MODE_TITLES = {
    "train": "Train step (forward + backward + Adam)",
    "inference": "Inference (whole sequence, no grad)",
    "step1": "One time step at batch 1, state carried (controller latency)",
    "step1_graph": "One time step at batch 1 through MLX's graph",
    "policy_loop": "One policy call inside its closed loop (Pendulum-v1, batch 1)",
    MATMULS: "Matrix products of one train step alone (same shapes, forward and backward)",
    VERSUS_LSTM: "Train step against torch's fused nn.LSTM of the same sizes",
}
MACHINE_FIELDS = (
    ("chip", "Chip / CPU"),
    ("cores_physical", "Physical cores"),
    ("cores_logical", "Logical cores"),
    ("memory_total_bytes", "Memory"),
    ("os", "OS"),
    ("python", "Python"),
    ("mlx_version", "MLX"),
    ("mlx_default_device", "MLX default device"),
    ("mlx_device_info", "MLX device info"),
    ("numpy_version", "NumPy"),
    ("ncps_mlx_version", "ncps_mlx"),
    ("ncps_mlx_threads", "ncps_mlx kernel threads"),
    ("torch_version", "PyTorch"),
    ("torch_threads", "PyTorch threads"),
    ("ncps_version", "ncps (reference)"),
)
COST_FIELDS = (
    ("flops", "FLOPs"),
    ("transcendentals", "transcendentals"),
    ("bytes", "bytes moved"),
    ("graph_ops", "graph ops"),
)
MODE_NOTES = {
    "step1": (
        "\nncps_mlx runs `ncps_mlx.Controller(model)`, the controller's call: NumPy in and out,"
        " the fused kernels run directly on the calling thread, what depends on the weights"
        " alone computed once when built. The reference runs `model(x, hx)` in evaluation"
        " mode under `torch.no_grad()`."
    ),
    "step1_graph": (
        "\nThe same steps through `make_predict(model, frozen=True)`: an MLX graph and its"
        " evaluation, as on the GPU. MLX computes on a worker thread that each evaluation"
        " wakes and waits for; a wake across the cores of a virtual machine costs tens of"
        " microseconds. The reference computes on the calling thread."
    ),
}
MODE_NOTES[VERSUS_LSTM] = (
    "\nThe torch column here is `torch.nn.LSTM(16, units, batch_first=True)` trained on the"
    " same inputs and targets with the same Adam step: torch's fused recurrent kernel, a"
    " bar rather than a rival (a CfC's step does more work than an LSTM's). The goal is"
    " a speed-up of at least 0.33x: within 3x of it."
)
MISSING = "-"
# step_costs knows training and inference; a controller step is one inference step.
COST_MODES = {"step1": "inference"}
# Modes whose per-step costs are those of another mode's row (the same calls).
SAME_COSTS = ("step1_graph",)


@dataclass(frozen=True)
class Row:
    """One case with both implementations' median seconds (None when not measured)."""

    model: str
    mode: str
    batch: int
    seq_len: int
    mlx: float | None = None
    torch: float | None = None
    peak_memory_bytes: int | None = None
    torch_saved_bytes: int | None = None

    @property
    def speedup(self) -> float | None:
        return self.torch / self.mlx if self.mlx and self.torch else None

    @property
    def label(self) -> str:
        return f"{self.model} {self.mode} b{self.batch} t{self.seq_len}"


def find_result(path: Path) -> Path:
    """``path`` itself, or for a directory the autosave with the highest counter."""
    if not path.is_dir():
        return path
    saved = sorted(path.rglob("*.json"), key=lambda found: (found.name, str(found)))
    if not saved:
        raise FileNotFoundError(f"no pytest-benchmark JSON under {path}")
    return saved[-1]


def _sort_key(row: Row) -> tuple:
    order = list(MODELS)
    model = order.index(row.model) if row.model in order else len(order)
    mode = MODES.index(row.mode) if row.mode in MODES else len(MODES)
    return (mode, model, row.model, row.batch, row.seq_len)


def collect_rows(benchmarks: list[dict[str, Any]]) -> list[Row]:
    """Pair each case's mlx and torch results (read from ``extra_info``), sorted."""
    found: dict[tuple, dict[str, Any]] = {}
    for bench in benchmarks:
        info = bench.get("extra_info", {})
        if "model" not in info or "impl" not in info:
            continue
        key = (info["model"], info["mode"], info["batch"], info["seq_len"])
        fields = found.setdefault(key, {})
        fields[info["impl"]] = bench["stats"]["median"]
        if info["impl"] == "mlx":
            fields["peak_memory_bytes"] = info.get("peak_memory_bytes")
        elif "saved_for_backward_bytes" in info:
            fields["torch_saved_bytes"] = info["saved_for_backward_bytes"]
    rows = [Row(*key, **fields) for key, fields in found.items()]
    return sorted(rows, key=_sort_key)


def format_time(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_bytes(count: int | None) -> str:
    if count is None:
        return MISSING
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def format_speedup(ratio: float | None) -> str:
    return MISSING if ratio is None else f"{ratio:.2f}x"


def format_count(value: Any) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def machine_section(info: dict[str, Any]) -> list[str]:
    rows = []
    for key, title in MACHINE_FIELDS:
        value = info.get(key)
        if key == "memory_total_bytes" and value is not None:
            value = format_bytes(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{name}: {item}" for name, item in sorted(value.items()))
        rows.append([title, MISSING if value is None else str(value)])
    return ["## Machine", "", *table(["item", "value"], rows), ""]


def models_section(rows: list[Row]) -> list[str]:
    names = sorted({row.model for row in rows}, key=lambda name: _sort_key(Row(name, "", 0, 0)))
    body = [[name, f"`{MODELS[name].describe()}`"] for name in names if name in MODELS]
    return ["## Models", "", *table(["model", "constructor"], body), ""]


def mode_section(mode: str, rows: list[Row]) -> list[str]:
    rows = [row for row in rows if row.mode == mode]
    if not rows:
        return []
    header = ["model", "batch", "seq", "mlx median", "torch median", "speed-up", "mlx peak memory"]
    saved = any(row.torch_saved_bytes is not None for row in rows)
    body = []
    for row in rows:
        times = [format_time(row.mlx), format_time(row.torch), format_speedup(row.speedup)]
        cells = [row.model, str(row.batch), str(row.seq_len), *times]
        cells.append(format_bytes(row.peak_memory_bytes))
        body.append(cells + [format_bytes(row.torch_saved_bytes)] * saved)
    lines = [f"## {MODE_TITLES.get(mode, mode)}", "", *table(header + SAVED * saved, body)]
    notes = [SAVED_NOTE] * saved + ([MODE_NOTES[mode]] if mode in MODE_NOTES else [])
    return lines + notes + [""]


SAVED = ["torch saved for backward"]
SAVED_NOTE = (
    "\nThe reference's column is what its forward pass keeps for the backward pass (every"
    " storage autograd saves): a lower bound of its peak, which torch does not report on the"
    " CPU. Its LTC evaluates the dense (batch, units, units) synapse grid."
)


def breakdown_section(rows: list[Row]) -> list[str]:
    """Split train steps whose matrix products were timed alone into products and rest."""
    found = {(row.model, row.batch, row.seq_len, row.mode): row for row in rows}
    body = []
    for (model, batch, seq_len, mode), products in found.items():
        step = found.get((model, batch, seq_len, "train"))
        if mode != MATMULS or step is None:
            continue
        # A step faster than its products alone does them some other way (the fused CPU
        # step's own loops): the difference then means nothing.
        rest = [
            None if whole is None or part is None or whole < part else whole - part
            for whole, part in ((step.mlx, products.mlx), (step.torch, products.torch))
        ]
        for part, mlx, torch in (
            ("matrix products", products.mlx, products.torch),
            ("everything else", *rest),
            ("whole train step", step.mlx, step.torch),
        ):
            ratio = mlx / torch if mlx and torch else None
            cells = [format_time(mlx), format_time(torch), "-" if ratio is None else f"{ratio:.1f}"]
            body.append([f"{model} b{batch} t{seq_len}", part, *cells])
    if not body:
        return []
    header = ["case", "part", "mlx", "torch", "mlx / torch"]
    return [
        "## Where the time goes",
        "",
        "The train step against its matrix products timed alone as each library's matrix",
        "multiplication (same shapes, same run); everything else is the difference. On the",
        "CPU, ncps_mlx's fused CfC step does these products in its own loops, not with MLX's",
        "matmul: where its whole step is faster than the products alone, the difference is",
        "not defined (-) and the step's own rate below is the figure to read.",
        "",
        *table(header, body),
        "",
        *[_throughput(row, found) for row in rows if row.mode == MATMULS],
    ]


def _throughput(row: Row, found: dict) -> str:
    """The matrix products' FLOPs, each implementation's rate on them alone and, as a
    bound on the rate inside it, over its whole train step."""
    shapes = matmul_shapes(build_mlx(MODELS[row.model]), row.batch, row.seq_len)
    flops = sum(2 * m * k * n for m, k, n in shapes)
    step = found.get((row.model, row.batch, row.seq_len, "train"))

    def rates(products: Row | None) -> str:
        return ", ".join(
            f"{impl} {flops / seconds / 1e9:.1f} GFLOP/s"
            for impl, seconds in (("mlx", products.mlx), ("torch", products.torch))
            if seconds
        )

    line = f"- {row.model} b{row.batch} t{row.seq_len}: {flops / 1e9:.2f} GFLOP in products; "
    line += f"products alone: {rates(row)}"
    if step is not None:
        line += f"; whole train step (at least): {rates(step)}"
    return line + "\n"


def cost_section(rows: list[Row]) -> list[str]:
    """Per-step costs from ``ncps_mlx.costs.step_costs`` for each (model, mode, batch)."""
    title = ["## Device-independent cost per time step", ""]
    try:
        costs = importlib.import_module("ncps_mlx.costs")
    except ImportError as error:
        return [*title, f"Not available: `ncps_mlx.costs` cannot be imported ({error}).", ""]
    measured = [
        row
        for row in rows
        if row.model in MODELS and row.mode in MODES and row.mode not in SAME_COSTS
    ]
    keys = sorted({(row.model, row.mode, row.batch) for row in measured})
    keys.sort(key=lambda key: _sort_key(Row(key[0], key[1], key[2], 0)))
    body, notes = [], []
    for model, mode, batch in keys:
        try:
            built = build_mlx(MODELS[model])
            found = costs.step_costs(built, batch=batch, mode=COST_MODES.get(mode, mode))
        except Exception as error:  # one failing case must not hide the others
            notes.append(f"- {model} {mode} b{batch}: {type(error).__name__}: {error}")
            continue
        values = [format_count(found.get(key, MISSING)) for key, _ in COST_FIELDS]
        body.append([model, mode, str(batch), *values])
    header = ["model", "mode", "batch", *(name for _, name in COST_FIELDS)]
    source = "From `ncps_mlx.costs.step_costs`; step1 counts as inference at batch 1."
    lines = [*title, source, "", *table(header, body), ""]
    return lines + (["Not computed:", "", *notes, ""] if notes else [])


def render(data: dict[str, Any], source: str = "") -> str:
    rows = collect_rows(data.get("benchmarks", []))
    commit_info = data.get("commit_info", {})
    commit = f"`{commit_info.get('id') or MISSING}`"
    commit += " (dirty)" if commit_info.get("dirty") else ""
    lines = [
        "# ncps_mlx benchmarks",
        "",
        f"Source: `{source}`, saved {data.get('datetime', MISSING)}, commit {commit}.",
        "Times are medians; speed-up = torch median / mlx median, so above 1x means ncps_mlx",
        "is faster. Both implementations ran in the same session on the machine below.",
        "",
        *machine_section(data.get("machine_info", {})),
        *models_section(rows),
    ]
    for mode in [*MODES, *sorted({row.mode for row in rows} - set(MODES))]:
        lines += mode_section(mode, rows)
    lines += breakdown_section(rows)
    lines += cost_section(rows)
    return "\n".join(lines).rstrip() + "\n"


def plot(rows: list[Row], path: Path) -> None:
    """Horizontal bars of speed-up per model case on a log axis, with a line at 1x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    paired = [row for row in rows if row.speedup is not None and row.mode in MODES]
    ratios = [row.speedup for row in paired]
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.25 * max(len(paired), 1)))
    # Bars start at 1x so slower cases point left and faster ones right on the log axis.
    widths = [ratio - 1.0 for ratio in ratios]
    colors = ["tab:green" if ratio >= 1 else "tab:red" for ratio in ratios]
    ax.barh(range(len(paired)), widths, left=1.0, color=colors)
    for index, ratio in enumerate(ratios):
        side = 1 if ratio >= 1 else -1
        ax.annotate(
            f"{ratio:.2f}x",
            (ratio, index),
            xytext=(3 * side, 0),
            textcoords="offset points",
            ha="left" if side > 0 else "right",
            va="center",
            fontsize=6,
        )
    ax.set_yticks(range(len(paired)), [row.label for row in paired], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    span = max([abs(math.log10(ratio)) for ratio in ratios] + [0.3]) * 1.25
    ax.set_xlim(10**-span, 10**span)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("speed-up (torch median / mlx median; > 1: ncps_mlx faster)")
    ax.set_title("ncps_mlx vs ncps (PyTorch)" if paired else "no case has both implementations")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    parser.add_argument("result", type=Path, help="pytest-benchmark JSON, or a directory")
    parser.add_argument("--out", type=Path, help="markdown file to write (default: stdout)")
    parser.add_argument("--plot", type=Path, help="PNG file for the speed-up chart")
    args = parser.parse_args(argv)
    path = find_result(args.result)
    data = json.loads(path.read_text())
    text = render(data, source=path.name)
    if args.out is None:
        print(text, end="")
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.plot is not None:
        plot(collect_rows(data.get("benchmarks", [])), args.plot)


if __name__ == "__main__":
    main()
