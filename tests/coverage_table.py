"""The package's branch coverage as a short Markdown table: per subpackage, then every
module below 95%, from the data file that a covered test run leaves.

    python -m pytest --cov --cov-branch          # as CI runs it; leaves .coverage
    python -m tests.coverage_table [--write-docs] [--data FILE]

``--write-docs`` puts the table in docs/testing.md, between its ``coverage`` markers. The
figures are coverage.py's: covered statements and branches out of all of them, with the
exclusions and path mappings of ``[tool.coverage]`` in pyproject.toml. The data file is
``--data``, else ``$COVERAGE_FILE``, else ``.coverage`` in the current folder.
"""

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs" / "testing.md"
START, END = "<!-- coverage:start -->", "<!-- coverage:end -->"
PACKAGE = "ncps_mlx"
LISTED_BELOW = 95.0  # modules under this share are listed one by one


@dataclass(frozen=True)
class Counts:
    """Statements and branches of some code, and how many of each ran."""

    statements: int
    run: int
    branches: int
    taken: int

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(
            self.statements + other.statements,
            self.run + other.run,
            self.branches + other.branches,
            self.taken + other.taken,
        )

    @property
    def percent(self) -> float:
        """Covered statements and branches out of all, as coverage.py reports it."""
        total = self.statements + self.branches
        return 100.0 * (self.run + self.taken) / total if total else 100.0


def module_counts(report: dict) -> dict[str, Counts]:
    """``module path -> Counts`` from coverage.py's JSON report (``coverage json``)."""
    found = {}
    for path, entry in report["files"].items():
        summary = entry["summary"]
        found[Path(path).as_posix()] = Counts(
            summary["num_statements"],
            summary["covered_lines"],
            summary.get("num_branches", 0),
            summary.get("covered_branches", 0),
        )
    return found


def package_of(module: str) -> str:
    """The subpackage a module belongs to; top-level modules are the package's own."""
    parts = Path(module).parts
    return "/".join(parts[:2]) if len(parts) > 2 else parts[0]


def table(modules: dict[str, Counts]) -> str:
    """Markdown: statements, branches and cover per subpackage and in all, then the
    modules below ``LISTED_BELOW`` percent, lowest first."""
    packages: dict[str, Counts] = {}
    for module, counts in modules.items():
        name = package_of(module)
        packages[name] = packages[name] + counts if name in packages else counts
    total = sum(modules.values(), Counts(0, 0, 0, 0))
    rows = [
        "| package | statements | branches | missed (statements + branches) | cover |",
        "|---|---:|---:|---:|---:|",
    ]

    def row(name: str, c: Counts) -> str:
        missed = c.statements - c.run + c.branches - c.taken
        return f"| {name} | {c.statements} | {c.branches} | {missed} | {c.percent:.1f}% |"

    rows += [row(f"`{name}`", packages[name]) for name in sorted(packages)]
    rows.append(row("**all**", total))
    low = sorted((c.percent, module) for module, c in modules.items() if c.percent < LISTED_BELOW)
    rows += ["", f"Modules below {LISTED_BELOW:.0f}%:", ""]
    if low:
        rows += ["| module | statements | branches | missed | cover |", "|---|---:|---:|---:|---:|"]
        rows += [row(f"`{module}`", modules[module]) for _, module in low]
    else:
        rows.append("none.")
    return "\n".join(rows)


def json_report(data_file: str | None) -> dict:
    """coverage.py's JSON report of ``data_file``, with pyproject.toml's settings."""
    import coverage

    cov = coverage.Coverage(data_file=data_file, config_file=str(ROOT / "pyproject.toml"))
    cov.load()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "coverage.json"
        cov.json_report(outfile=str(out))
        return json.loads(out.read_text())


def write_docs(text: str, page: Path = DOCS) -> None:
    """Put ``text`` between the markers of ``page``."""
    content = page.read_text(encoding="utf-8")
    head, start, rest = content.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"{page.name} has no {START} ... {END} block")
    page.write_text(f"{head}{START}\n{text}\n{END}{tail}", encoding="utf-8")


def main(arguments: Sequence[str]) -> int:
    arguments = list(arguments)
    docs = "--write-docs" in arguments
    data_file = None
    if "--data" in arguments:
        data_file = arguments[arguments.index("--data") + 1]
    data_file = data_file or os.environ.get("COVERAGE_FILE") or ".coverage"
    if not Path(data_file).is_file():
        print(f"no coverage data at {data_file!r}: run `python -m pytest --cov --cov-branch`")
        return 1
    data_file = str(Path(data_file).resolve())
    os.chdir(ROOT)  # the report names the modules relative to the current folder
    modules = {
        module: counts
        for module, counts in module_counts(json_report(data_file)).items()
        if module.startswith(PACKAGE + "/")
    }
    report = table(modules)
    print(report)
    if docs:
        write_docs(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
