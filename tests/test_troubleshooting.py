"""The troubleshooting guide and the error messages that point into it agree."""

import ast
import re
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import ncps_mlx
from ncps_mlx import CfC
from ncps_mlx.config import validate_config
from ncps_mlx.errors import (
    TROUBLESHOOTING,
    CheckpointError,
    ConfigError,
    MemoryBudgetError,
    NCPSError,
    StateDictError,
    WiringError,
    see,
)
from ncps_mlx.training import check_memory, fit
from ncps_mlx.wirings import AutoNCP

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "troubleshooting.md"
PACKAGE = ROOT / "ncps_mlx"
ANCHOR = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
HEADING_ID = re.compile(r"\s\{#([^}]*)\}$")


def guide_lines() -> list[str]:
    """The guide's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in GUIDE.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def headings() -> list[str]:
    return [line for line in guide_lines() if re.match(r"#{2,6} ", line)]


def guide_anchors() -> set[str]:
    return {m.group(1) for line in headings() if (m := HEADING_ID.search(line))}


def referenced_anchors() -> dict[str, list[str]]:
    """Anchor -> where the package's code calls ``see(anchor)``."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            is_see = isinstance(node, ast.Call) and (
                (isinstance(node.func, ast.Name) and node.func.id == "see")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "see")
            )
            if not is_see:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            args = node.args
            literal = len(args) == 1 and isinstance(args[0], ast.Constant)
            assert literal and isinstance(args[0].value, str), f"{where}: see() needs a literal"
            found.setdefault(args[0].value, []).append(where)
    return found


def published_site() -> str:
    """``site_url`` of mkdocs.yml: where the docs workflow publishes the site."""
    return re.search(r"^site_url: (\S+)$", (ROOT / "mkdocs.yml").read_text(), flags=re.M)[1]


def test_the_pointer_links_the_published_guide():
    # docs/troubleshooting.md is published as <site_url>troubleshooting/ (directory URLs)
    assert GUIDE.is_file()
    assert published_site() + "troubleshooting/" == TROUBLESHOOTING
    expected = "See https://ncps-mlx.github.io/ncps_mlx/troubleshooting/#input-shape."
    assert see("input-shape") == expected


def test_every_section_has_an_explicit_anchor():
    assert len(headings()) >= 25
    missing = [line for line in headings() if not HEADING_ID.search(line)]
    assert missing == []
    ids = [HEADING_ID.search(line).group(1) for line in headings()]
    assert [i for i in ids if not ANCHOR.fullmatch(i)] == []
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_anchor_the_code_references_exists():
    references = referenced_anchors()
    assert len(references) >= 20  # the scan finds the calls
    missing = {a: w for a, w in references.items() if a not in guide_anchors()}
    assert missing == {}


def test_links_and_pointers_inside_the_guide_resolve():
    text = "\n".join(guide_lines())
    internal = set(re.findall(r"\]\(#([^)]+)\)", text))
    pointer = re.escape(see("@")).replace("@", "([a-z0-9-]+)")
    shown = set(re.findall(pointer, GUIDE.read_text()))
    assert shown, "the guide quotes messages with their pointers"
    assert internal | shown <= guide_anchors(), sorted((internal | shown) - guide_anchors())


def test_every_package_error_class_is_covered():
    text = GUIDE.read_text()
    classes = {cls.__name__ for cls in NCPSError.__subclasses__()}
    classes |= {"NCPSError", "UnsupportedOpError", "PackageFormatError"}
    assert sorted(name for name in classes if f"`{name}`" not in text) == []


def assert_points_to(error: pytest.ExceptionInfo, anchor: str) -> None:
    message = str(error.value)
    assert message.splitlines()[-1] == see(anchor)
    assert message.count(f"See {TROUBLESHOOTING}#") == 1


def test_a_wrong_feature_count_points_to_input_shape():
    with pytest.raises(ValueError, match="with 3 features, but got shape") as error:
        CfC(3, 8)(mx.zeros((2, 5, 4)))
    assert_points_to(error, "input-shape")


def test_fit_keeps_the_layers_pointer():
    x, y = np.zeros((4, 5, 4), np.float32), np.zeros((4, 5, 8), np.float32)
    with pytest.raises(ValueError, match=r"^\[fit\] train data does not fit") as error:
        fit(CfC(3, 8), (x, y), epochs=1, progress=False)
    assert_points_to(error, "input-shape")


@pytest.mark.parametrize(
    ("kwargs", "anchor"),
    [
        ({"timespans": mx.ones((5, 2))}, "timespans"),
        ({"mask": mx.ones((2, 5))}, "mask"),
        ({"hx": mx.zeros((8,))}, "initial-state"),
    ],
)
def test_call_arguments_point_to_their_sections(kwargs, anchor):
    with pytest.raises(ValueError) as error:
        CfC(3, 8)(mx.zeros((2, 5, 3)), **kwargs)
    assert_points_to(error, anchor)


def test_a_checkpoint_of_another_model_points_to_checkpoint_mismatch(tmp_path):
    path = ncps_mlx.save(CfC(3, 8), tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="was saved from another model") as error:
        ncps_mlx.load_weights(CfC(3, 16), path)
    assert_points_to(error, "checkpoint-mismatch")


def test_a_missing_checkpoint_points_to_checkpoint_unreadable(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint file") as error:
        ncps_mlx.load(tmp_path / "missing.safetensors")
    assert_points_to(error, "checkpoint-unreadable")


def test_a_memory_budget_error_points_to_memory_budget():
    with pytest.raises(MemoryBudgetError, match="the memory budget is") as error:
        check_memory(CfC(3, 64), 4096, 100, budget=2**20)
    assert_points_to(error, "memory-budget")


def test_a_wiring_error_points_to_its_section():
    wiring = AutoNCP(10, 2)
    CfC(3, wiring)
    with pytest.raises(WiringError, match="cannot be rebuilt") as error:
        CfC(5, wiring)
    assert_points_to(error, "wiring-input-size")


def test_a_state_dict_error_points_to_state_dict_mismatch():
    from ncps_mlx.interop import load_ncps_state_dict, to_ncps_state_dict

    state_dict = to_ncps_state_dict(CfC(3, AutoNCP(10, 2)))
    with pytest.raises(StateDictError, match="does not fit this CfC") as error:
        load_ncps_state_dict(CfC(3, AutoNCP(12, 2)), state_dict)
    assert_points_to(error, "state-dict-mismatch")


def test_a_config_error_points_to_config_error_once():
    raw = {
        "data": {"name": "sine_waves"},
        "model": {"type": "CfC", "units": 8},
        "training": {"batch_size": 100_000, "memory_budget_mb": 1, "epochs": 0},
        "output": {"dir": "runs/x"},
    }
    with pytest.raises(ConfigError, match="problems in the config") as error:
        validate_config(raw, source="run.toml")
    assert_points_to(error, "config-error")
    # The memory problem quotes a MemoryBudgetError without that error's own pointer.
    assert any("memory budget" in problem for problem in error.value.problems)
    assert not any(TROUBLESHOOTING in problem for problem in error.value.problems)
