"""The kernels' line coverage report (tests/kernel_coverage.py): gcov's reports read and
merged, the table and the page's block, and, with gcc, the coverage build's flags at work
in a small library loaded as MLX loads the kernels (in-process, counts written at exit).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ncps_mlx.kernels import build
from tests import kernel_coverage

KERNELS = kernel_coverage.KERNELS


def report(*files: tuple[Path, dict[int, int]]) -> str:
    """gcov's JSON report of one compiled file: for each source, its lines' counts."""
    entries = [
        {"file": str(path), "lines": [{"line_number": n, "count": c} for n, c in counts.items()]}
        for path, counts in files
    ]
    return json.dumps({"gcc_version": "12.2.0", "files": entries})


def test_a_header_ran_where_any_file_including_it_ran_it():
    ran = kernel_coverage.line_counts(
        [
            report((KERNELS / "ltc.cpp", {1: 3, 2: 0}), (KERNELS / "common.h", {5: 0, 6: 2})),
            report((KERNELS / "cfc.cpp", {1: 0}), (KERNELS / "common.h", {5: 1, 6: 0, 7: 0})),
            report((Path("/elsewhere/mlx/array.h"), {1: 9})),  # not a kernel source
        ]
    )
    assert ran == {
        "ltc.cpp": {1: True, 2: False},
        "common.h": {5: True, 6: True, 7: False},
        "cfc.cpp": {1: False},
    }
    # A line two functions share (template instances) ran if one of them ran it.
    twice = json.loads(report((KERNELS / "dense.h", {4: 0})))
    twice["files"][0]["lines"].append({"line_number": 4, "count": 1})
    assert kernel_coverage.line_counts([json.dumps(twice)]) == {"dense.h": {4: True}}


def test_the_table_and_the_lines_not_run():
    ran = {"b.cpp": {1: True, 2: False, 3: False, 5: False}, "a.h": {1: True}}
    assert kernel_coverage.table(ran).splitlines() == [
        "| file | lines | run | % |",
        "|---|---:|---:|---:|",
        "| `a.h` | 1 | 1 | 100.0 |",
        "| `b.cpp` | 4 | 1 | 25.0 |",
        "| **all** | 5 | 2 | 40.0 |",
    ]
    assert kernel_coverage.not_run(ran) == "b.cpp: 2-3, 5"


def test_the_table_goes_between_the_markers_of_the_page(monkeypatch, tmp_path):
    page = tmp_path / "testing.md"
    start, end = kernel_coverage.START, kernel_coverage.END
    page.write_text(f"before\n{start}\nold\n{end}\nafter\n")
    monkeypatch.setattr(kernel_coverage, "DOCS", page)
    kernel_coverage.write_docs("| new |")
    assert page.read_text() == f"before\n{start}\n| new |\n{end}\nafter\n"
    page.write_text("no block\n")
    with pytest.raises(SystemExit, match="no <!-- kernel-coverage:start -->"):
        kernel_coverage.write_docs("| new |")


def test_the_testing_guide_has_the_block_and_its_totals_add_up():
    page = kernel_coverage.DOCS.read_text()
    block = page.partition(kernel_coverage.START)[2].partition(kernel_coverage.END)[0]
    rows = [line.split("|")[1:-1] for line in block.strip().splitlines()[2:]]
    names = {row[0].strip().strip("`") for row in rows[:-1]}
    assert names == {path.name for path in KERNELS.iterdir() if path.suffix in (".cpp", ".h")}
    lines, run = (sum(int(row[i]) for row in rows[:-1]) for i in (1, 2))
    assert rows[-1][0].strip() == "**all**" and (int(rows[-1][1]), int(rows[-1][2])) == (lines, run)
    assert float(rows[-1][3]) == round(100 * run / lines, 1)


LIBRARY = """
#include "elsewhere.h"
extern "C" int sign(int x) {
  if (x > 0)
    return 1;
  return elsewhere(x);
}
"""


@pytest.mark.skipif(
    kernel_coverage.unsupported() is not None, reason="kernel coverage needs Linux and gcc"
)
def test_the_coverage_flags_count_a_loaded_library_and_nothing_else(tmp_path):
    sources, other, counts = tmp_path / "kernels", tmp_path / "other", tmp_path / "coverage"
    for folder in (sources, other, counts):
        folder.mkdir()
    (sources / "sign.cpp").write_text(LIBRARY)
    (other / "elsewhere.h").write_text("inline int elsewhere(int x) { return x ? -1 : 0; }\n")
    target = tmp_path / "scratch" / "sign.so"
    target.parent.mkdir()
    compile_ = [
        build.compiler(), *build.coverage_flags(sources), "-shared", "-fPIC", f"-I{other}",
        str(sources / "sign.cpp"), "-o", str(target), "-dumpdir", f"{counts}/",
    ]  # fmt: skip
    subprocess.run(compile_, check=True, capture_output=True)
    # Loaded and run in-process, as MLX loads the kernels: counts are written at exit.
    code = f"import ctypes; assert ctypes.CDLL({str(target)!r}).sign(3) == 1"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert sorted(path.name for path in counts.iterdir()) == ["sign.gcda", "sign.gcno"]
    ran = kernel_coverage.measure(counts, sources)
    lines = LIBRARY.splitlines()
    assert ran == {"sign.cpp": {lines.index(line) + 1: run for line, run in [
        ('extern "C" int sign(int x) {', True),
        ("  if (x > 0)", True),
        ("    return 1;", True),
        ("  return elsewhere(x);", False),  # elsewhere.h itself is not counted
    ]}}  # fmt: skip
