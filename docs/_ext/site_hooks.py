"""MkDocs hooks for the documentation site (``hooks`` in mkdocs.yml; excluded from the built site).

- **Strict under --quiet.** ``--quiet`` raises the ``mkdocs`` logger to ERROR, and strict mode counts warnings with a
  handler on that same logger: the warnings are dropped before they are counted, and ``make docs``
  (``mkdocs build --strict --quiet``) would pass with a broken reference. With ``strict: true`` the level goes back
  to WARNING (INFO stays silent), so every warning is shown and counted.
- **An offline 404 page.** MkDocs writes ``404.html`` with root-absolute links (``/assets/...``) for a server that
  answers every missing path with it; opened from ``site/`` those point at the file system's root. It sits at the
  site's root, so the same links written relative work there.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

_ROOT_ABSOLUTE = re.compile(r'(\s(?:href|src)=")/(?!/)')


def on_config(config: Any, **kwargs: Any) -> None:
    """Runs before any page is read; strict comes from the config file or ``--strict``."""
    logger = logging.getLogger("mkdocs")
    if config.strict and logger.level > logging.WARNING:
        logger.setLevel(logging.WARNING)


def relative_404(html: str) -> str:
    """``404.html`` with its root-absolute links made relative to the site's root, where the page lies."""
    html = _ROOT_ABSOLUTE.sub(r"\1", html)
    return re.sub(r'("base":\s*)"/"', r'\1"."', html)


def on_post_build(config: Any, **kwargs: Any) -> None:
    page = Path(config.site_dir) / "404.html"
    if page.is_file():
        page.write_text(relative_404(page.read_text(encoding="utf-8")), encoding="utf-8")
