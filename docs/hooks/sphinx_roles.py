"""mkdocs hook: the docstrings' reStructuredText habits read well in the API reference.

The package's docstrings use Sphinx roles such as ``:class:`~ncps_mlx.CfC``` and literal
blocks introduced by ``::`` (as read in ``help()`` and IDEs). Markdown leaves a role as
``:class:<code>~ncps_mlx.CfC</code>``; this turns each into an optional mkdocs-autorefs
reference, a link where the target is documented and plain code where not. The code block
after ``::`` renders already; the second colon goes.
"""

import re

ROLE = re.compile(r":(?:class|func|meth|attr|data|exc|mod|obj):<code>(~?)([\w.]+)</code>")
LITERAL_BLOCK = re.compile(r"::</p>(\s*<div class=\"highlight\">)")


def _reference(match: re.Match) -> str:
    short, target = match.groups()
    shown = target.rsplit(".", 1)[-1] if short else target
    return f'<autoref optional identifier="{target}"><code>{shown}</code></autoref>'


def on_page_content(html: str, **_) -> str:
    return LITERAL_BLOCK.sub(r":</p>\1", ROLE.sub(_reference, html))
