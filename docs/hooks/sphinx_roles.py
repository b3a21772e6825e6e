"""mkdocs hook: the docstrings' Sphinx roles become cross-references.

The package's docstrings use roles such as ``:class:`~ncps_mlx.CfC``` (read as such in
``help()`` and IDEs). Markdown leaves them as ``:class:<code>~ncps_mlx.CfC</code>``; this
turns each into an optional mkdocs-autorefs reference, a link where the target is
documented and plain code where not.
"""

import re

ROLE = re.compile(r":(?:class|func|meth|attr|data|exc|mod|obj):<code>(~?)([\w.]+)</code>")


def _reference(match: re.Match) -> str:
    short, target = match.groups()
    shown = target.rsplit(".", 1)[-1] if short else target
    return f'<autoref optional identifier="{target}"><code>{shown}</code></autoref>'


def on_page_content(html: str, **_) -> str:
    return ROLE.sub(_reference, html)
