"""The documentation site's sources, checked without building it (``make docs`` builds it, strictly).

- every public name (``convbridge.__all__``) is documented: a ``::: convbridge.NAME`` directive on some page, or an
  entry in the API overview's "Not documented here" list;
- ``mkdocs.yml``'s nav names only pages that exist, and every page is in the nav;
- the site stays offline: no page or config loads anything from another host (fonts, scripts, styles, images);
- ``docs/_ext/rst_docstrings.py`` (the griffe extension that turns the docstrings' reST habits into Markdown)
  links roles, flags roles that name nothing, fences doctest blocks and converts reST tables.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

import convbridge

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"
DIRECTIVE = re.compile(r"^:::[ \t]+([\w.]+)[ \t]*$", re.MULTILINE)


def pages() -> dict[str, str]:
    """Every Markdown page of the site, by its path relative to docs/."""
    return {p.relative_to(DOCS).as_posix(): p.read_text(encoding="utf-8") for p in sorted(DOCS.rglob("*.md"))}


def config() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")  # mkdocs' own dependency
    loaded = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def nav_files(nav: Any) -> list[str]:
    """The page paths of a mkdocs nav, in order (entries may be strings, {title: path} or {title: [..]})."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [f for item in nav for f in nav_files(item)]
    if isinstance(nav, dict):
        return [f for value in nav.values() for f in nav_files(value)]
    raise AssertionError(f"unexpected nav entry {nav!r}")


def not_documented() -> dict[str, str]:
    """The API overview's list of public names without a directive: ``- `name`: reason``."""
    text = pages()["api/index.md"]
    section = text.partition("## Not documented here")[2].partition("\n## ")[0]
    return dict(re.findall(r"^- `([\w.]+)`: (.+)$", section, re.MULTILINE))


# ---- the API reference covers the public API ------------------------------------------------------------------


def test_every_public_name_is_documented() -> None:
    documented = {name for text in pages().values() for name in DIRECTIVE.findall(text)}
    excused = not_documented()
    missing = [name for name in convbridge.__all__ if f"convbridge.{name}" not in documented and name not in excused]
    assert not missing, f"public names with no ::: directive in docs/ and no entry in 'Not documented here': {missing}"


MEMBERS = re.compile(r"^:::[ \t]+([\w.]+)[ \t]*\n(?:[ \t]+.*\n)*?[ \t]+members:[ \t]*\[([^\]]*)\]", re.MULTILINE)


@pytest.mark.parametrize("module", ["memory", "autotune", "sharding", "transpose", "port"])
def test_every_public_name_of_the_public_modules_is_documented(module: str) -> None:
    """Found by a hostile reader: a module page listing some of its module's names silently drops the others."""
    import importlib

    mod = importlib.import_module(f"convbridge.{module}")
    text = "\n".join(pages().values())
    documented = set(DIRECTIVE.findall(text))
    listed = {f"convbridge.{module}.{name.strip()}" for target, members in MEMBERS.findall(text)
              if target.startswith(f"convbridge.{module}") for name in members.split(",")}  # its submodules too
    whole = f"convbridge.{module}" in documented and f"convbridge.{module}" not in {t for t, _ in MEMBERS.findall(text)}
    missing = [n for n in mod.__all__ if not whole and not ({f"convbridge.{module}.{n}", f"convbridge.{n}"}
                                                           & (documented | listed))]
    assert not missing, f"convbridge.{module}.__all__ names missing from the API reference: {missing}"


def test_excuses_name_public_names_with_a_reason() -> None:
    excused = not_documented()
    assert excused, "api/index.md lost its 'Not documented here' list"
    for name, reason in excused.items():
        assert name in convbridge.__all__, f"'Not documented here' lists {name}, which is not in convbridge.__all__"
        assert len(reason.split()) >= 3, f"give a reason for leaving {name} undocumented, not {reason!r}"
    documented = {name for text in pages().values() for name in DIRECTIVE.findall(text)}
    both = [name for name in excused if f"convbridge.{name}" in documented]
    assert not both, f"listed as not documented but documented by a directive: {both}"


def test_directives_name_convbridge_objects() -> None:
    for page, text in pages().items():
        for target in DIRECTIVE.findall(text):
            assert target == "convbridge" or target.startswith("convbridge."), f"{page}: ::: {target}"


# ---- the nav ---------------------------------------------------------------------------------------------------


def test_nav_names_existing_pages_and_every_page() -> None:
    cfg = config()
    listed = nav_files(cfg["nav"])
    missing = [f for f in listed if not (DOCS / f).is_file()]
    assert not missing, f"mkdocs.yml's nav names pages that do not exist under docs/: {missing}"
    assert len(listed) == len(set(listed)), f"a page is listed twice: {listed}"
    assert sorted(listed) == sorted(pages()), "every page in docs/ is in the nav, and only those"
    for required in ("index.md", "tutorial.md", "porting.md", "parity.md", "benchmarks.md", "sharding.md",
                     "api/index.md"):
        assert required in listed, f"the nav lost {required}"


def test_strict_build_settings() -> None:
    cfg = config()
    assert cfg.get("strict") is True
    assert cfg["docs_dir"] == "docs"
    python = next(p["mkdocstrings"] for p in cfg["plugins"] if isinstance(p, dict) and "mkdocstrings" in p)
    handler = python["handlers"]["python"]
    assert handler["options"]["docstring_style"] == "google"
    assert handler.get("inventories") == [], "no objects.inv downloads: the build must work offline"


# ---- offline -------------------------------------------------------------------------------------------------


EXTERNAL_ASSET = [
    re.compile(r"!\[[^\]]*\]\(\s*(?:https?:)?//", re.IGNORECASE),  # a Markdown image from another host
    re.compile(r"<(?:img|script|iframe|source|video|audio|embed)\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//",
               re.IGNORECASE),
    re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//", re.IGNORECASE),
    re.compile(r"@import\s+(?:url\()?[\"']?(?:https?:)?//", re.IGNORECASE),
    re.compile(r"url\(\s*[\"']?(?:https?:)?//", re.IGNORECASE),
]


@pytest.mark.parametrize("text", ['![x](https://example.com/a.png)', '<img src="//cdn.example.com/a.png">',
                                  "<script src='https://cdn.jsdelivr.net/npm/mathjax@3'></script>",
                                  '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">',
                                  "@import url('https://fonts.googleapis.com/css2')"])
def test_the_external_asset_patterns_catch(text: str) -> None:
    assert any(p.search(text) for p in EXTERNAL_ASSET)


def test_no_page_loads_from_another_host() -> None:
    files = {**pages(), **{p.relative_to(DOCS).as_posix(): p.read_text(encoding="utf-8")
                           for p in DOCS.rglob("*") if p.suffix in (".css", ".js", ".html")}}
    for name, text in files.items():
        for pattern in EXTERNAL_ASSET:
            found = pattern.search(text)
            assert found is None, f"{name} loads an asset from another host: {found.group(0) if found else ''}"


def test_the_theme_loads_nothing_from_another_host() -> None:
    cfg = config()
    assert cfg["theme"].get("font") is False, "Material loads Google Fonts unless theme.font is false"
    for key in ("extra_css", "extra_javascript"):
        for entry in cfg.get(key, []):
            path = entry if isinstance(entry, str) else entry.get("path", "")
            assert not re.match(r"(?:https?:)?//", path), f"{key} loads {path} from another host"
            assert (DOCS / path).is_file(), f"{key} names {path}, which is not under docs/"
    assert "analytics" not in cfg.get("extra", {}), "no analytics: the site is opened offline"
    assert "repo_url" not in cfg, "the repository widget fetches GitHub's API from the browser"
    extensions = [e if isinstance(e, str) else next(iter(e)) for e in cfg.get("markdown_extensions", [])]
    assert "pymdownx.arithmatex" not in extensions, "arithmatex needs MathJax or KaTeX, usually from a CDN"
    assert "pymdownx.emoji" not in extensions, "twemoji images come from a CDN"


# ---- the griffe extension --------------------------------------------------------------------------------------


def extension() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rst_docstrings", DOCS / "_ext" / "rst_docstrings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PACKAGE = {
    "__init__.py": '"""A package.\n\nSee :func:`helper`, :class:`~pkgx.sub.Thing`, :data:`LIMIT` and :func:`jax.lax.conv`."""\n'
                   "from pkgx.sub import Thing\nLIMIT, OTHER = 1, 2\n\ndef helper():\n    \"\"\"Help.\"\"\"\n",
    "sub.py": 'class Thing:\n    """A thing: :meth:`size <pkgx.sub.Thing.size>` and :func:`convbridge_missing_name`."""\n\n'
              "    def size(self):\n        \"\"\"Its size.\"\"\"\n",
}


@pytest.fixture(scope="module")
def package() -> Any:
    griffe = pytest.importorskip("griffe")
    with griffe.temporary_visited_package("pkgx", PACKAGE) as pkg:
        yield pkg


def test_roles_become_links_where_they_resolve(package: Any) -> None:
    ext = extension()
    text, problems = ext.rewrite(package.docstring.value, package, package.modules_collection)
    assert '<autoref identifier="pkgx.helper" optional><code>helper</code></autoref>' in text
    assert '<autoref identifier="pkgx.sub.Thing" optional><code>Thing</code></autoref>' in text  # ~ keeps the last part
    assert "<code>LIMIT</code>" in text  # bound by `LIMIT, OTHER = 1, 2`: never a problem, linked or not
    assert "<code>jax.lax.conv</code>" in text  # another library's name: plain code, never a problem
    assert ":func:" not in text and ":class:" not in text
    assert problems == []


def test_a_role_naming_nothing_is_reported(package: Any, caplog: pytest.LogCaptureFixture) -> None:
    ext = extension()
    thing = package.modules_collection.get_member("pkgx.sub.Thing")
    text, problems = ext.rewrite(thing.docstring.value, thing, package.modules_collection)
    assert '<autoref identifier="pkgx.sub.Thing.size" optional><code>size</code></autoref>' in text
    assert problems == ["convbridge_missing_name"]
    with caplog.at_level(logging.WARNING, logger="mkdocs.plugins.convbridge_docs"):
        ext.RstDocstrings().on_package(pkg=package, loader=SimpleNamespace(modules_collection=package.modules_collection))
    assert any("'convbridge_missing_name' names nothing" in r.getMessage() for r in caplog.records), caplog.text


def test_doctest_blocks_are_fenced() -> None:
    ext = extension()
    lines = ["Text:", ">>> x = 1  # doctest: +ELLIPSIS", ">>> x", "1", "", "After.", "```", ">>> kept", "```",
             "Args:", "    a: an example", "    >>> indented"]
    assert ext._doctest_fences(lines) == ["Text:", "", "```pycon", ">>> x = 1", ">>> x", "1", "```", "", "After.",
                                          "```", ">>> kept", "```", "Args:", "    a: an example", "    >>> indented"]


def test_rest_tables_become_markdown() -> None:
    ext = extension()
    rst = ["====  ==========  =====", "kind  gauge       c", "====  ==========  =====", "conv  ``|W||x|``  K",
           "relu  max |x|     0:", "                  exact", "====  ==========  =====", ""]
    assert ext._tables(rst) == ["| kind | gauge | c |", "|---|---|---|", "| conv | ``|W||x|`` | K |",
                                "| relu | max \\|x\\| | 0: exact |", ""]
    headless = ["==  ===", "a   one", "b   two", "==  ===", ""]
    assert ext._tables(headless) == ["|  |  |", "|---|---|", "| a | one |", "| b | two |", ""]


def test_literal_block_markers() -> None:
    ext = extension()
    assert ext._literal_markers(["in torch's order::", "", "    code", "::", "", "    more"]) == \
        ["in torch's order:", "", "    code", "", "    more"]


def test_fenced_code_is_left_alone() -> None:
    ext = extension()
    lines = [">>> print(table)", "====  ====", "a     b", "====  ====", "", "```text", "x::", "", "```"]
    text = "\n".join(lines)
    out = ext._literal_markers(ext._tables(ext._doctest_fences(lines)))
    assert out == ["```pycon", ">>> print(table)", "====  ====", "a     b", "====  ====", "```", "", "```text",
                   "x::", "", "```"], text


def test_sections_griffe_cannot_read_are_repaired() -> None:
    ext = extension()
    args = ["Args:", "    a, b, c,", "        d: as for X.", "    e: one", "        continued.", "", "After."]
    assert ext._section_items(args) == ["Args:", "    a, b, c, d: as for X.", "    e: one", "        continued.", "",
                                        "After."]
    bare = ["Attributes:", "    conv1, relu1,", "        fc3.", "", "Shape:", "    x"]
    assert ext._section_items(bare) == ["**Attributes:** conv1, relu1, fc3.", "", "Shape:", "    x"]
    named = ["Attributes:", "    op: the op.", "    shape: output shape."]
    assert ext._section_items(named) == named


def test_strict_survives_quiet() -> None:
    """`make docs` runs `mkdocs build --strict --quiet`: --quiet drops warnings before strict mode counts them."""
    cfg = config()
    assert "docs/_ext/site_hooks.py" in cfg.get("hooks", []), "mkdocs.yml lost the hook that keeps --quiet strict"
    spec = importlib.util.spec_from_file_location("site_hooks", DOCS / "_ext" / "site_hooks.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    logger = logging.getLogger("mkdocs")
    before = logger.level
    try:
        logger.setLevel(logging.ERROR)  # what --quiet does
        hook.on_config(SimpleNamespace(strict=False))
        assert logger.level == logging.ERROR, "without strict, --quiet stays quiet"
        hook.on_config(SimpleNamespace(strict=True))
        assert logger.level == logging.WARNING
        logger.setLevel(logging.DEBUG)  # --verbose is left alone
        hook.on_config(SimpleNamespace(strict=True))
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(before)


def test_the_404_page_links_relative_to_the_site_root() -> None:
    spec = importlib.util.spec_from_file_location("site_hooks", DOCS / "_ext" / "site_hooks.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = ('<link rel="stylesheet" href="/assets/main.css"> <a href="/api/ops.html">ops</a> '
            '<script src="/assets/bundle.js"></script> <a href="//example.com/x">x</a> <a href="https://a.b/">y</a> '
            '{"base": "/", "features": []}')
    assert hook.relative_404(page) == (
        '<link rel="stylesheet" href="assets/main.css"> <a href="api/ops.html">ops</a> '
        '<script src="assets/bundle.js"></script> <a href="//example.com/x">x</a> <a href="https://a.b/">y</a> '
        '{"base": ".", "features": []}')
