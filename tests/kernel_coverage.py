"""The fused kernels' line coverage: the kernel tests run on a build of the C++ kernels
that counts the lines it runs (gcc's ``--coverage``), then a table of the lines run per
source file.

    python -m tests.kernel_coverage [--write-docs] [pytest arguments]

Without pytest arguments it runs the kernel tests that CI also runs under the sanitizers.
``--write-docs`` puts the table in docs/testing.md, between its ``kernel-coverage``
markers. Linux and gcc only: elsewhere it says so and stops (exit status 0).

The build is cached apart from the others (``NCPS_MLX_COVERAGE=1``); every process that
loads it, the tests' worker processes included, adds its counts when it exits, so the
counts are emptied before the tests run and the library is built and proven first: the
table counts the tests' lines alone. gcc only knows the functions it compiled: an inline
function or template that nothing calls is in no total.
"""

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).parents[1]
KERNELS = ROOT / "ncps_mlx" / "kernels"
DOCS = ROOT / "docs" / "testing.md"
START, END = "<!-- kernel-coverage:start -->", "<!-- kernel-coverage:end -->"
# The kernel tests of CI's sanitizer run (.ci/run): the kernels directly, through the
# models on every thread count, fuzzed at their boundary, and under mx.vmap / mx.compile.
TESTS = (
    "tests/test_kernels.py",
    "tests/test_kernels_cfc.py",
    "tests/test_kernels_dense.py",
    "tests/test_kernel_threads.py",
    "tests/test_kernel_fuzz.py",
    "tests/test_controller.py",
    "tests/test_transformations.py",
)


def unsupported() -> str | None:
    """Why coverage cannot be measured here (it needs Linux, gcc and its gcov), else None."""
    if platform.system() != "Linux":
        return "the kernels' coverage is measured on Linux only"
    from ncps_mlx.kernels import build

    try:
        cxx = build.compiler()
    except build.BuildError as error:
        return str(error)
    macros = subprocess.run(
        [cxx, "-dM", "-E", "-x", "c++", os.devnull], capture_output=True, text=True
    ).stdout
    if "__GNUC__" not in macros or "__clang__" in macros:
        return f"the kernels' coverage needs gcc, and {cxx} is not gcc (set CXX=g++)"
    if gcov(cxx) is None:
        return "gcc's gcov is not installed"
    return None


def gcov(cxx: str) -> str | None:
    """The gcov of the compiler ``cxx`` (the one that reads its notes), if installed."""
    name = subprocess.run(
        [cxx, "-print-prog-name=gcov"], capture_output=True, text=True
    ).stdout.strip()
    return shutil.which(name or "gcov")


def prepare() -> Path:
    """Build and prove the coverage build in a process of its own, then empty its counts;
    returns the folder of its counts."""
    from ncps_mlx.kernels import build, library

    code = "import sys; from ncps_mlx import kernels; sys.exit(kernels.unavailable_reason())"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    folder = build.coverage_dir(build.library_path(library.SOURCES, library.NAME))
    for counts in folder.glob("*.gcda"):
        counts.unlink()
    return folder


def line_counts(reports: Iterable[str], sources: Path = KERNELS) -> dict[str, dict[int, bool]]:
    """Whether each line of each file in ``sources`` ran, from gcov's JSON ``reports`` (one
    per compiled file; a header's lines are in the report of every file that includes it,
    and ran if they ran in any)."""
    ran: dict[str, dict[int, bool]] = {}
    for report in reports:
        for source in json.loads(report)["files"]:
            path = Path(source["file"])
            if path.parent != sources:
                continue
            lines = ran.setdefault(path.name, {})
            for line in source["lines"]:
                number = line["line_number"]
                lines[number] = lines.get(number, False) or line["count"] > 0
    return ran


def measure(folder: Path, sources: Path = KERNELS) -> dict[str, dict[int, bool]]:
    """The counts left in ``folder`` for the files in ``sources``, read by gcov."""
    from ncps_mlx.kernels import build

    counts = sorted(str(path) for path in folder.glob("*.gcda"))
    if not counts:
        raise SystemExit("no counts were written: did the tests load the kernels?")
    tool = gcov(build.compiler())
    output = subprocess.run(
        [tool, "--json-format", "--stdout", *counts],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return line_counts(output.splitlines(), sources)


def table(ran: dict[str, dict[int, bool]]) -> str:
    """A Markdown table: lines run out of the lines with code, per file and in all."""
    rows = ["| file | lines | run | % |", "|---|---:|---:|---:|"]

    def row(name: str, lines: Sequence[bool]) -> str:
        share = 100 * sum(lines) / len(lines) if lines else 100.0
        return f"| {name} | {len(lines)} | {sum(lines)} | {share:.1f} |"

    every: list[bool] = []
    for name in sorted(ran):
        lines = list(ran[name].values())
        every += lines
        rows.append(row(f"`{name}`", lines))
    rows.append(row("**all**", every))
    return "\n".join(rows)


def not_run(ran: dict[str, dict[int, bool]]) -> str:
    """The lines that did not run, per file, as ranges ("12-15, 40")."""
    found = []
    for name in sorted(ran):
        ranges: list[list[int]] = []
        for number in sorted(n for n, run in ran[name].items() if not run):
            if ranges and number == ranges[-1][1] + 1:
                ranges[-1][1] = number
            else:
                ranges.append([number, number])
        spans = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in ranges)
        found += [f"{name}: {spans}"] if spans else []
    return "\n".join(found)


def write_docs(text: str) -> None:
    """Put ``text`` between the markers of docs/testing.md."""
    page = DOCS.read_text()
    head, start, rest = page.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"{DOCS.name} has no {START} ... {END} block")
    DOCS.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main(arguments: Sequence[str]) -> int:
    reason = unsupported()
    if reason is not None:
        print(f"kernel coverage skipped: {reason}")
        return 0
    docs = "--write-docs" in arguments
    tests = [argument for argument in arguments if argument != "--write-docs"] or TESTS
    os.environ.pop("NCPS_MLX_SANITIZE", None)
    os.environ["NCPS_MLX_COVERAGE"] = "1"
    folder = prepare()
    start = time.perf_counter()
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    status = subprocess.run(pytest, cwd=ROOT).returncode
    seconds = time.perf_counter() - start
    ran = measure(folder)
    report = table(ran)
    print(f"\nThe C++ kernels' line coverage ({seconds:.0f} s of tests):\n\n{report}")
    print(f"\nLines not run:\n{not_run(ran)}")
    if docs and status == 0:  # the table of a failing run is not the suite's
        write_docs(report)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
