"""Every public name of the package can be found in the API reference: each has a heading
of its own in the built site (docs/api/*.md).

The public names are those of the namespaces in ``PUBLIC_NAMESPACES``: a namespace's
``__all__`` when it has one; otherwise what its source exports, that is the names it
re-exports explicitly (``from .module import Name as Name``) and the public classes,
functions and constants it defines itself. A name counts as documented when a heading
of the built reference (an id ``ncps_mlx...`` of mkdocstrings) leads to the same object
under the same name, wherever it is rendered (``ncps_mlx.CfCCell`` is documented as
``ncps_mlx.cells.CfCCell``); a module, when its members are.

One ``mkdocs build --strict`` for the module (a few seconds); skipped without the ``docs``
extra.
"""

import ast
import contextlib
import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import ncps_mlx

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_NAMESPACES = (
    "ncps_mlx",
    "ncps_mlx.cells",
    "ncps_mlx.wirings",
    "ncps_mlx.training",
    "ncps_mlx.datasets",
    "ncps_mlx.export",
    "ncps_mlx.monitor",
    "ncps_mlx.kernels",
    "ncps_mlx.config",
    "ncps_mlx.interop",
    "ncps_mlx.costs",
    "ncps_mlx.errors",
    "ncps_mlx.policies",
    "ncps_mlx.baselines",
    "ncps_mlx.numerics",
)
# Public subpackages whose names are not API, and why.
NOT_API = {"ncps_mlx.demo": "the code of the `ncps-mlx demo` command"}
HEADING_ID = re.compile(r'<h[1-6] id="(ncps_mlx(?:\.[\w]+)*)" class="doc doc-heading"')
_MISSING = object()


def exported_names(namespace: str) -> list[str]:
    """The public names of ``namespace`` (see the module docstring), in source order."""
    module = importlib.import_module(namespace)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    names = []
    for node in ast.parse(Path(module.__file__).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            names += [alias.name for alias in node.names if alias.asname == alias.name]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [target.id for target in targets if isinstance(target, ast.Name)]
    return [name for name in names if not name.startswith("_")]


def public_names() -> dict[str, object]:
    """Every public name, as its full path in the first namespace exporting it."""
    found = {}
    for namespace in PUBLIC_NAMESPACES:
        module = importlib.import_module(namespace)
        for name in exported_names(namespace):
            found[f"{namespace}.{name}"] = getattr(module, name)
    return found


def resolve(path: str) -> object:
    """The object a heading id names, or ``_MISSING``. Attributes come first, then
    submodules: ``ncps_mlx.export.verify`` is the function the package exports, while
    ``ncps_mlx.training.fit.fit`` goes through the module of that name."""
    parts = path.split(".")

    def walk(obj: object, index: int, prefix: str) -> object:
        if index == len(parts):
            return obj
        name = f"{prefix}.{parts[index]}"
        candidates = [getattr(obj, parts[index])] if hasattr(obj, parts[index]) else []
        with contextlib.suppress(ImportError):  # not a module either
            candidates.append(importlib.import_module(name))
        for candidate in candidates:
            found = walk(candidate, index + 1, name)
            if found is not _MISSING:
                return found
        return _MISSING

    return walk(importlib.import_module(parts[0]), 1, parts[0])


def undocumented(names: dict[str, object], heading_ids: set[str]) -> list[str]:
    """The names in ``names`` that no heading documents."""
    by_name: dict[str, list[object]] = {}
    for ident in heading_ids:
        by_name.setdefault(ident.rsplit(".", 1)[-1], []).append(resolve(ident))
    missing = []
    for path, obj in names.items():
        if isinstance(obj, ModuleType):
            documented = any(
                i == obj.__name__ or i.startswith(obj.__name__ + ".") for i in heading_ids
            )
        else:
            documented = any(found is obj for found in by_name.get(path.rsplit(".", 1)[-1], []))
        if not documented:
            missing.append(path)
    return missing


@pytest.fixture(scope="module")
def heading_ids(tmp_path_factory) -> set[str]:
    """The ids of every documented object's heading on the API pages of a fresh build."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")  # the docs extra: pip install ".[docs]"
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    pages = sorted((out / "api").glob("*/index.html"))
    assert len(pages) == len(list((ROOT / "docs" / "api").glob("*.md")))
    return {ident for page in pages for ident in HEADING_ID.findall(page.read_text("utf-8"))}


def test_every_public_name_has_a_heading_in_the_api_reference(heading_ids):
    names = public_names()
    assert len(names) > 140  # every namespace was read
    missing = undocumented(names, heading_ids)
    listed = "\n".join(f"  {path}" for path in missing)
    assert missing == [], (
        f"{len(missing)} public names are not in the API reference; add a `::: name` entry "
        f"to a page of docs/api/ (or a docstring, for a member the page renders):\n{listed}"
    )


def test_every_heading_leads_to_an_object(heading_ids):
    assert len(heading_ids) > 250
    assert sorted(ident for ident in heading_ids if resolve(ident) is _MISSING) == []


def test_every_public_subpackage_is_api_or_said_not_to_be():
    subpackages = {
        info.name
        for info in pkgutil.iter_modules(ncps_mlx.__path__, "ncps_mlx.")
        if info.ispkg and not info.name.rsplit(".", 1)[-1].startswith("_")
    }
    assert subpackages - set(PUBLIC_NAMESPACES) - set(NOT_API) == set()
    assert set(NOT_API) <= subpackages


def test_public_names_follow_all_or_the_explicit_re_exports():
    names = public_names()
    # __all__ decides where there is one: the export package's names, not its submodules
    assert "ncps_mlx.export.verify" in names and callable(names["ncps_mlx.export.verify"])
    assert "ncps_mlx.export.coreml" not in names
    # `from .x import Name as Name` exports; a plain import does not
    assert "ncps_mlx.config.ConfigError" in names
    assert "ncps_mlx.config.see" not in names
    assert "ncps_mlx.wirings" in names and "ncps_mlx.CfC" in names
    assert "ncps_mlx.datasets.SHIPPED" in names  # constants are names too
    assert not any(path.rsplit(".", 1)[-1].startswith("_") for path in names)


def test_undocumented_finds_names_without_a_heading_of_their_own():
    from ncps_mlx import CfC, cells

    names = {"ncps_mlx.CfC": CfC, "ncps_mlx.cells.CfCCell": cells.CfCCell, "ncps_mlx.cells": cells}
    # CfC has no heading of its own (LTC's is another object); the module's members have
    assert undocumented(names, {"ncps_mlx.LTC", "ncps_mlx.cells.CfCCell"}) == ["ncps_mlx.CfC"]
    assert undocumented(names, {"ncps_mlx.CfC"}) == ["ncps_mlx.cells.CfCCell", "ncps_mlx.cells"]
    assert undocumented({"ncps_mlx.CfCCell": cells.CfCCell}, {"ncps_mlx.cells.CfCCell"}) == []
