"""Every Python sample in docs/**/*.md runs as written, in order, one namespace per file."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_deployment_guide_has_samples():
    assert len(python_blocks(DOCS / "deployment.md")) >= 2


def test_deployment_guide_lists_every_allowed_op():
    from ncps_mlx.export.coreml import ALLOWED_OPS  # no coremltools needed

    text = (DOCS / "deployment.md").read_text()
    assert [op for op in sorted(ALLOWED_OPS) if f"`{op}`" not in text] == []


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(DOCS)) for page in PAGES])
def test_doc_samples_run_in_order(page, tmp_path, monkeypatch):
    blocks = python_blocks(page)
    if any("ncps_mlx.export" in block for block in blocks):
        pytest.importorskip("coremltools")
    if any(re.search(r"^(import|from) (ncps|torch)\b", block, flags=re.M) for block in blocks):
        pytest.importorskip("ncps")  # the reference, with torch: pip install ".[interop]"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)
