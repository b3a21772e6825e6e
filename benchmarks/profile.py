"""Where an ncps_mlx case's time goes, from the CPU samples of Linux ``perf``.

    python -m benchmarks.profile cfc_fc:train:32 cfc_mixed:train:32 [--calls 40]
        [--source CHECKOUT]

Each case (``model:mode:batch``, the workloads of :mod:`benchmarks.workloads`) runs
``--calls`` times in a process of its own, sampled by ``perf record`` from after two
warm-up calls (not the imports or the compiling); its samples (every thread's) are
grouped by what ran: the fused kernels' matrix products
and the rest of them, MLX's matrix products (its CPU BLAS) and other operations, memory
management, the operating system (threads waiting for work, page faults), and
everything else (Python, NumPy). ``--source``
profiles another checkout of the project (an older commit, to compare before and after).
Prints a markdown table: each group's share of the samples and the wall time per call.
Linux only (``perf``); the shares are CPU time, so on 2 cores they add up to the busy
time of both.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

GROUPS = (
    "kernels: matrix products",
    "kernels: the rest",
    "MLX matmul (CPU BLAS)",
    "MLX: other operations",
    "memory: allocation and copies",
    "the OS: threads waiting, page faults",
    "other (Python, NumPy, ...)",
)
RUN = """
import os, signal, subprocess, sys, time
from benchmarks.workloads import MODELS, Case, runner
model, mode, batch, calls, data = sys.argv[1:6]
seq_len = getattr(MODELS[model], "seq_len", None) or 128  # an older checkout has none
run = runner(Case(model, mode, int(batch), seq_len), "mlx")
run(); run()
# Sampled from here on only: not the imports, the compiling or the warm-up.
perf = subprocess.Popen(["perf", "record", "-q", "-p", str(os.getpid()), "-o", data])
time.sleep(0.5)
start = time.perf_counter()
for _ in range(int(calls)):
    run()
seconds = (time.perf_counter() - start) / int(calls)
perf.send_signal(signal.SIGINT)
perf.wait()
print(seconds)
"""


def group(dso: str, symbol: str) -> str:
    """The group of a sample from its shared object and symbol."""
    if "_ncps_kernels" in dso:
        if "tile<" in symbol or "gemm" in symbol:
            return GROUPS[0]
        waiting = ("Pool::", "parallel_for", "std::thread")
        return GROUPS[5] if any(name in symbol for name in waiting) else GROUPS[1]
    if dso.startswith("libblas") or "sgemm" in symbol:  # MLX's (NumPy's is OpenBLAS)
        return GROUPS[2]
    memory = ("malloc", "free", "memset", "memmove", "memcpy", "_int_", "unlink_chunk")
    if dso.startswith("libc") and any(name in symbol for name in memory):
        return GROUPS[4]
    if "kernel" in dso or "vdso" in dso or "sched_yield" in symbol:
        return GROUPS[5]
    if dso.startswith("libmlx") or "_f4" in dso:  # MLX and the kernels mx.compile builds
        return GROUPS[3]
    return GROUPS[6]


def profile(case: str, calls: int, source: Path) -> tuple[float, Counter]:
    model, mode, batch = case.split(":")
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "perf.data"
        command = [sys.executable, "-c", RUN, model, mode, batch, str(calls), str(data)]
        env = {**os.environ, "PYTHONPATH": str(source)}
        recorded = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=source, check=True
        )
        seconds = float(recorded.stdout.strip().splitlines()[-1])
        report = subprocess.run(
            ["perf", "report", "-i", str(data), "--stdio", "--no-children", "-g", "none",
             "--sort", "dso,symbol", "--percent-limit", "0"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    shares: Counter = Counter()
    for line in report.splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[0].endswith("%") or line.lstrip().startswith("#"):
            continue
        shares[group(fields[1], " ".join(fields[3:]))] += float(fields[0].rstrip("%"))
    return seconds, shares


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("cases", nargs="+", help="model:mode:batch, e.g. cfc_fc:train:32")
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--source", type=Path, default=Path(__file__).parents[1])
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        parser.error("needs Linux perf (linux-perf / linux-tools) on the PATH")
    results = {case: profile(case, args.calls, args.source.resolve()) for case in args.cases}
    print("| group | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    times = " | ".join(f"{seconds * 1e3:.1f} ms" for seconds, _ in results.values())
    print(f"| wall time per call | {times} |")
    for name in GROUPS:
        print(f"| {name} | " + " | ".join(f"{c[name]:.0f}%" for _, c in results.values()) + " |")


if __name__ == "__main__":
    main()
