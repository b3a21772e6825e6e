"""The API reference renders: the built site shows no raw reStructuredText and no private
members, docstrings are Markdown and their ``Example:`` sections run, and the pointers of
error messages lead to sections of the page the docs workflow publishes.

One ``mkdocs build --strict`` for the module (a few seconds); skipped without the ``docs``
extra. What is raw is what a reader would see as markup: a Sphinx role or directive, an
rST link, a literal block's ``::``, doctest prompts turned into nested quotes.
"""

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_PAGES = sorted(page.stem for page in (ROOT / "docs" / "api").glob("*.md"))

# Each kind of markup that Markdown leaves as it is, as it shows in the built HTML.
RAW_MARKS = {
    "Sphinx role": re.compile(r":(?:math|class|func|meth|attr|data|exc|mod|obj|ref):(?:`|<code>)"),
    "rST directive": re.compile(r"\.\. [a-z-]+::?(?=[\s<])"),
    "rST link": re.compile(r"(?:`|</code>)__?(?![\w-])"),
    "literal block '::'": re.compile(r"::</p>"),
    "doctest as nested quotes": re.compile(r"<blockquote>\s*<blockquote>"),
    "doctest prompt in text": re.compile(r"&gt;&gt;&gt; "),
}
# The same markup as written in a docstring, before Markdown sees it.
SOURCE_MARKS = {
    "Sphinx role": re.compile(r":[a-z]+:`"),
    "rST directive": re.compile(r"^\s*\.\. [a-z-]+::", flags=re.M),
    "rST link": re.compile(r">`__?(?![\w-])"),
    "literal block '::'": re.compile(r"::$", flags=re.M),
    "doctest prompt": re.compile(r"^\s*>>> ", flags=re.M),
}
CODE_BLOCK = re.compile(r"<pre\b.*?</pre>", flags=re.S)
HEADING_ID = re.compile(r'<h[1-6] id="([^"]+)" class="doc doc-heading"')


def raw_marks(html: str) -> list[tuple[str, str]]:
    """Each raw mark on a built page, as (kind, the text around it); code blocks may show
    any markup, so they are left out."""
    text = CODE_BLOCK.sub("", html)
    found = []
    for kind, mark in RAW_MARKS.items():
        for match in mark.finditer(text):
            around = text[max(match.start() - 60, 0) : match.end() + 40]
            found.append((kind, " ".join(around.split())))
    return found


def private_headings(html: str) -> list[str]:
    """The documented members whose own name starts with an underscore."""
    return [ident for ident in HEADING_ID.findall(html) if ident.rsplit(".", 1)[-1].startswith("_")]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")  # the docs extra: pip install ".[docs]"
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return out


def api_page(site: Path, name: str) -> str:
    return (site / "api" / name / "index.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", API_PAGES)
def test_api_page_shows_no_raw_restructuredtext(site, name):
    found = raw_marks(api_page(site, name))
    listed = "\n".join(f"  api/{name}: {kind}: ...{around}..." for kind, around in found)
    assert found == [], f"{len(found)} raw marks:\n{listed}"


@pytest.mark.parametrize("name", API_PAGES)
def test_api_page_lists_no_private_member(site, name):
    assert private_headings(api_page(site, name)) == []


def test_formulas_reach_the_math_renderer(site):
    # arithmatex wraps each formula for MathJax, which typesets it in the browser
    cells = api_page(site, "cells")
    assert cells.count('class="arithmatex"') >= 10
    assert "\\mathrm{backbone}" in cells


def test_mathjax_configured_before_it_loads(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script src="([^"]+)"', index)
    config = next(i for i, src in enumerate(scripts) if src.endswith("mathjax.js"))
    library = next(i for i, src in enumerate(scripts) if "mathjax@3" in src)
    assert config < library


def pointer_anchors() -> set[str]:
    """The anchors of the package's ``see("anchor")`` calls."""
    anchors = set()
    for path in (ROOT / "ncps_mlx").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "see":
                anchors |= {arg.value for arg in node.args if isinstance(arg, ast.Constant)}
    return anchors


def test_error_pointers_lead_to_sections_of_the_published_page(site):
    from ncps_mlx.errors import TROUBLESHOOTING

    # mkdocs lists each page's published address, from site_url, in the sitemap
    assert f"<loc>{TROUBLESHOOTING}</loc>" in (site / "sitemap.xml").read_text(encoding="utf-8")
    page = (site / "troubleshooting" / "index.html").read_text(encoding="utf-8")
    anchors = pointer_anchors()
    assert len(anchors) >= 20  # the scan finds the pointers
    assert sorted(a for a in anchors if f'id="{a}"' not in page) == []


def test_the_docs_workflow_publishes_a_strict_build_of_main():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "docs.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key as True
    assert triggers["push"]["branches"] == ["main"]
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    assert any("mkdocs build --strict" in step.get("run", "") for step in steps)
    assert any(step.get("uses", "").startswith("actions/deploy-pages@") for step in steps)


def test_checker_finds_each_kind_of_raw_mark():
    page = (
        "<p>With :math:<code>t</code>, see :class:<code>~ncps_mlx.CfC</code>.</p>"
        "<p>.. math::</p><p>A <code>paper &lt;https://x.org&gt;</code>_ cell.</p>"
        "<p>From the shell::</p>"
        "<blockquote>\n<blockquote>\n<blockquote><p>import numpy</p></blockquote>"
        "<p>&gt;&gt;&gt; x = 1 &gt;&gt;&gt; y = 2</p>"
        "<pre><code>:math:`kept in code` &gt;&gt;&gt; ok</code></pre>"
    )
    kinds = [kind for kind, _ in raw_marks(page)]
    assert sorted(set(kinds)) == sorted(RAW_MARKS)
    assert kinds.count("Sphinx role") == 2
    heading = '<h3 id="ncps_mlx.x._helper" class="doc doc-heading">'
    docstring = (
        "A `paper <https://x.org>`_ cell, see :class:`~ncps_mlx.CfC`.\n\n.. math::\n\n"
        "    t\n\nFrom the shell::\n\n    ncps-mlx demo\n\n>>> import ncps_mlx\n"
    )
    assert [kind for kind, mark in SOURCE_MARKS.items() if mark.search(docstring)] == list(
        SOURCE_MARKS
    )
    assert private_headings(heading) == ["ncps_mlx.x._helper"]


# A fenced Python block right under an "Example:" heading; other blocks may be sketches
# with names defined elsewhere.
EXAMPLE = re.compile(r"^[ \t]*Examples?:\n[ \t]*```python\n(.*?)```", flags=re.M | re.S)


DOCUMENTED = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def docstrings() -> list[tuple[str, str]]:
    """Every docstring of the package (modules, classes, functions), cleaned as help()
    shows it, with where it is: ``path:line`` or ``path:name``."""
    found = []
    for path in sorted((ROOT / "ncps_mlx").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            doc = ast.get_docstring(node) if isinstance(node, DOCUMENTED) else None
            if doc:
                found.append((f"{path.relative_to(ROOT)}:{getattr(node, 'name', 'module')}", doc))
    return found


def test_docstrings_are_written_in_markdown():
    # Markdown is what the API reference renders; reStructuredText would show as typed.
    # Formulas: $...$ and $$...$$; links: [text](url) or [`Name`][ncps_mlx.Name];
    # examples: fenced ```python blocks.
    found = [
        f"  {where}: {kind}"
        for where, doc in docstrings()
        for kind, mark in SOURCE_MARKS.items()
        if mark.search(doc)
    ]
    assert found == [], "reStructuredText in docstrings:\n" + "\n".join(found)


EXAMPLES = [
    (where, textwrap.dedent(block)) for where, doc in docstrings() for block in EXAMPLE.findall(doc)
]


def test_docstrings_have_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize(("where", "code"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_docstring_example_runs(where, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, where, "exec"), {})
