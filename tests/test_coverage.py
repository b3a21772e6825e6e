"""The coverage gate's rules: what may be left out, where it is listed, and the table that
docs/testing.md shows (tests/coverage_table.py)."""

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as the tomli package
    import tomli as tomllib

from tests import coverage_table
from tests.coverage_table import Counts, module_counts, package_of, table, write_docs

ROOT = Path(__file__).parents[1]
MARKER = "# pragma: no cover (macOS)"


def _settings() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["coverage"]


def _marked() -> list[tuple[str, str]]:
    """``(module, line)`` of every line of the package that carries an exclusion pragma."""
    found = []
    for path in sorted((ROOT / "ncps_mlx").rglob("*.py")):
        for line in path.read_text().splitlines():
            if re.search(r"#\s*pragma:\s*no\s*cover", line, flags=re.I):
                found.append((path.relative_to(ROOT).as_posix(), line))
    return found


def test_only_the_macos_marker_excludes_code():
    patterns = _settings()["report"]["exclude_lines"]
    assert any(re.search(pattern, MARKER) for pattern in patterns)
    for bare in ("x = 1  # pragma: no cover", "x = 1  # pragma: no cover - unreachable"):
        assert not any(re.search(pattern, bare) for pattern in patterns), bare


def test_every_exclusion_is_the_macos_marker_and_is_listed_in_the_docs():
    docs = (ROOT / "docs" / "testing.md").read_text()
    marked = _marked()
    assert marked, "the macOS-only code carries the marker"
    for module, line in marked:
        assert line.rstrip().endswith(MARKER), f"{module}: {line.strip()}"
        assert f"`{module}`" in docs, f"{module} is not listed in docs/testing.md"


def test_the_gate_is_90_percent_of_statements_and_branches():
    settings = _settings()
    assert settings["run"]["branch"] is True
    assert settings["report"]["fail_under"] == 90
    # CLI tests run the package in child processes; those are measured too.
    assert settings["run"]["patch"] == ["subprocess"] and settings["run"]["parallel"] is True


# -- the table -----------------------------------------------------------------------------


def _report(files: dict[str, tuple[int, int, int, int]]) -> dict:
    """A JSON report as ``coverage json`` writes it, of (statements, run, branches, taken)."""
    keys = ("num_statements", "covered_lines", "num_branches", "covered_branches")
    return {
        "files": {path: {"summary": dict(zip(keys, c, strict=True))} for path, c in files.items()}
    }


def test_a_share_counts_statements_and_branches_together():
    assert Counts(8, 6, 2, 1).percent == 70.0  # (6 + 1) of (8 + 2)
    assert Counts(0, 0, 0, 0).percent == 100.0  # nothing to run
    assert Counts(3, 2, 1, 1) + Counts(5, 4, 1, 0) == Counts(8, 6, 2, 1)


def test_modules_are_grouped_by_subpackage():
    assert package_of("ncps_mlx/rnn.py") == "ncps_mlx"
    assert package_of("ncps_mlx/config/npz.py") == "ncps_mlx/config"
    assert package_of("ncps_mlx/monitor/backends/_cf.py") == "ncps_mlx/monitor"


def test_the_table_sums_each_subpackage_and_lists_the_low_modules_lowest_first():
    modules = module_counts(
        _report(
            {
                "ncps_mlx/rnn.py": (10, 10, 4, 4),
                "ncps_mlx/config/npz.py": (10, 5, 10, 5),
                "ncps_mlx/config/data.py": (20, 19, 0, 0),
                "ncps_mlx/cells/cfc.py": (40, 38, 10, 9),
            }
        )
    )
    lines = table(modules).splitlines()
    assert lines[2:6] == [
        "| `ncps_mlx` | 10 | 4 | 0 | 100.0% |",
        "| `ncps_mlx/cells` | 40 | 10 | 3 | 94.0% |",
        "| `ncps_mlx/config` | 30 | 10 | 11 | 72.5% |",  # (24 + 5) of (30 + 10)
        "| **all** | 80 | 24 | 14 | 86.5% |",
    ]
    # data.py's 95.0% is not below 95: not listed.
    assert lines[6:] == [
        "",
        "Modules below 95%:",
        "",
        "| module | statements | branches | missed | cover |",
        "|---|---:|---:|---:|---:|",
        "| `ncps_mlx/config/npz.py` | 10 | 10 | 10 | 50.0% |",
        "| `ncps_mlx/cells/cfc.py` | 40 | 10 | 3 | 94.0% |",
    ]


def test_no_module_below_the_line_says_so():
    modules = module_counts(_report({"ncps_mlx/rnn.py": (10, 10, 2, 2)}))
    assert table(modules).endswith("Modules below 95%:\n\nnone.")


def test_write_docs_replaces_only_the_marked_block(tmp_path):
    page = tmp_path / "testing.md"
    page.write_text(f"before\n{coverage_table.START}\nold table\n{coverage_table.END}\nafter\n")
    write_docs("new table", page)
    assert page.read_text() == (
        f"before\n{coverage_table.START}\nnew table\n{coverage_table.END}\nafter\n"
    )
    page.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="has no <!-- coverage:start -->"):
        write_docs("new table", page)


def test_the_docs_hold_a_table_the_command_made():
    docs = (ROOT / "docs" / "testing.md").read_text()
    _, _, rest = docs.partition(coverage_table.START)
    block, end, _ = rest.partition(coverage_table.END)
    assert end, "docs/testing.md has the coverage block"
    assert block.strip().startswith("| package | statements | branches |")
    assert re.search(r"^\| \*\*all\*\* \| \d+ \| \d+ \| \d+ \| \d+\.\d% \|$", block, re.M)


def test_without_data_the_command_says_how_to_make_it(tmp_path, capsys):
    assert coverage_table.main(["--data", str(tmp_path / "none")]) == 1
    assert "run `python -m pytest --cov --cov-branch`" in capsys.readouterr().out
