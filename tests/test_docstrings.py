"""Every public name of the package has a docstring: interrogate, configured in
pyproject.toml's ``[tool.interrogate]``, finds 100% coverage, and the pre-commit hook that
runs it passes.

Public: a module, class, function, method or property whose name has no leading
underscore, in a module without one (``__init__`` and other dunder methods, and functions
nested in others, are not counted). Skipped without interrogate (the ``test`` extra).
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: the package's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ncps_mlx"

# The pyproject keys are the CLI's option names; these three name a setting otherwise.
CONFIG_FIELD = {
    "ignore_setters": "ignore_property_setters",
    "style": "docstring_style",
    "whitelist_regex": "include_regex",
}
# Options that change the report, not what is measured.
REPORT_ONLY = {"verbose", "quiet", "color", "omit_covered_files", "generate_badge"}


def interrogate_settings() -> dict:
    """``[tool.interrogate]`` of pyproject.toml, with the keys as the CLI reads them."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        table = tomllib.load(file)["tool"]["interrogate"]
    return {key.replace("-", "_"): value for key, value in table.items()}


def coverage(settings: dict):
    """interrogate's results for the package, measured as its CLI would from the root."""
    interrogate_config = pytest.importorskip("interrogate.config")
    interrogate_coverage = pytest.importorskip("interrogate.coverage")
    import attr

    fields = attr.fields_dict(interrogate_config.InterrogateConfig)
    measured = {
        CONFIG_FIELD.get(key, key): value
        for key, value in settings.items()
        if key not in REPORT_ONLY | {"exclude"}
    }
    unknown = sorted(set(measured) - set(fields))
    assert unknown == [], f"[tool.interrogate] has keys interrogate does not know: {unknown}"
    # The CLI makes each exclude pattern absolute from the folder it runs in.
    excluded = tuple(os.path.join(ROOT, pattern) for pattern in settings.get("exclude", ()))
    checker = interrogate_coverage.InterrogateCoverage(
        paths=[str(PACKAGE)],
        conf=interrogate_config.InterrogateConfig(**measured),
        excluded=excluded,
    )
    return checker.get_coverage(), settings.get("ignore_module", False)


def undocumented(results, ignore_module: bool, base: Path = ROOT) -> list[str]:
    """Each public name without a docstring, as ``path:line name`` (path from ``base``)."""
    missing = []
    for file in results.file_results:
        path = Path(file.filename).relative_to(base)
        for node in file.nodes:
            if node.covered or (ignore_module and node.node_type == "Module"):
                continue
            name = "(module docstring)" if node.node_type == "Module" else node.path
            missing.append(f"{path}:{node.lineno or 1} {name.split(':')[-1]}")
    return missing


def test_the_config_holds_coverage_at_100_percent():
    settings = interrogate_settings()
    assert settings["fail_under"] == 100
    # The choices the module docstring states: nothing public may be left out.
    assert settings.get("ignore_module", False) is False
    assert settings.get("ignore_property_decorators", False) is False
    assert settings.get("ignore_init_module", False) is False
    assert not settings.get("ignore_regex")
    assert not settings.get("whitelist_regex")


def test_every_public_name_has_a_docstring():
    results, ignore_module = coverage(interrogate_settings())
    missing = undocumented(results, ignore_module)
    listed = "\n".join(f"  {entry}" for entry in missing)
    assert missing == [], f"{len(missing)} public names without a docstring:\n{listed}"
    assert results.perc_covered == 100.0
    assert results.total > 600  # the package was found and measured, not excluded


def test_private_modules_and_tests_are_not_measured():
    results, _ = coverage(interrogate_settings())
    measured = {Path(file.filename).relative_to(ROOT).as_posix() for file in results.file_results}
    assert "ncps_mlx/cli.py" in measured
    assert "ncps_mlx/cells/__init__.py" in measured
    assert "ncps_mlx/monitor/backends/nvml.py" in measured
    private = [path for path in measured if any(p.startswith("_") for p in Path(path).parts)]
    assert [path for path in private if not path.endswith("/__init__.py")] == []
    assert all(path.startswith("ncps_mlx/") for path in measured)


def test_undocumented_names_are_listed(tmp_path):
    interrogate_config = pytest.importorskip("interrogate.config")
    interrogate_coverage = pytest.importorskip("interrogate.coverage")
    module = tmp_path / "sample.py"
    module.write_text(
        '"""A module."""\n\n\ndef documented():\n    """Yes."""\n\n\n'
        "def bare():\n    pass\n\n\ndef _private():\n    pass\n\n\n"
        "class Thing:\n    @property\n    def size(self):\n        return 1\n"
    )
    settings = {k: v for k, v in interrogate_settings().items() if k != "exclude"}
    measured = {CONFIG_FIELD.get(k, k): v for k, v in settings.items() if k not in REPORT_ONLY}
    results = interrogate_coverage.InterrogateCoverage(
        paths=[str(tmp_path)], conf=interrogate_config.InterrogateConfig(**measured)
    ).get_coverage()
    names = [entry.split(" ", 1)[1] for entry in undocumented(results, False, tmp_path)]
    assert names == ["bare", "Thing", "Thing.size"]


def test_the_pre_commit_hook_passes():
    yaml = pytest.importorskip("yaml")
    pytest.importorskip("interrogate")
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    hook = hooks["interrogate"]
    assert hook["pass_filenames"] is False  # it measures the package, not the files changed
    command = shlex.split(hook["entry"])
    assert command[0] == "interrogate"
    run = subprocess.run(
        [sys.executable, "-m", "interrogate", *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "actual: 100.0%" in run.stdout
