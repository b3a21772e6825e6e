"""The example run configs reach what their comments state."""

import json
import re
from pathlib import Path

import pytest

from ncps_mlx import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_japanese_vowels_reaches_the_accuracy_its_comment_states(tmp_path):
    pytest.importorskip("aeon")
    config = EXAMPLES / "japanese_vowels.toml"
    # The floor is read from the comment, so the comment cannot drift from the test.
    floor = float(re.search(r"asserts at least ([\d.]+)", config.read_text()).group(1))
    out = tmp_path / "run"
    assert cli.main(["train", str(config), "--out", str(out)]) == 0
    accuracy = json.loads((out / "metrics.json").read_text())["final"]["val_accuracy"]
    print(f"{config.name}: test accuracy {accuracy:.3f}")
    assert accuracy >= floor == 0.92
