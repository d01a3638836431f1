"""A griffe extension for the documentation site: convbridge's docstrings mix Google sections with a few
reStructuredText habits that Markdown would render badly. Before mkdocstrings parses a docstring, this rewrites:

- Sphinx roles (``:func:`name```, ``:class:`~convbridge.x.Y```, ``:meth:`title <target>```) into
  cross-references: a link where the target is documented on the site, plain code otherwise. A role naming a
  ``convbridge`` object that does not exist at all (a typo, a renamed function) is a warning, so that
  ``mkdocs build --strict`` fails on it.
- doctest blocks (``>>>`` lines outside an ``Examples:`` section) into fenced ``pycon`` code (Markdown would
  read ``>>>`` as three nested block quotes);
- simple reST tables (``=====  =====`` borders) into Markdown tables;
- a paragraph ending in ``::`` (a literal block follows) into one ending in ``:``;
- Google sections griffe cannot read: an item naming several arguments over two lines (``a, b, c,`` then
  ``d: as for X.``) is joined into one line, and an ``Attributes:`` section of bare names becomes a sentence (griffe
  would drop it).

Loaded by mkdocstrings (``extensions`` in mkdocs.yml); not part of the convbridge package. Excluded from the
built site (``exclude_docs``).
"""

from __future__ import annotations

import ast
import functools
import html
import logging
import re
from pathlib import Path
from typing import Any

import griffe

_log = logging.getLogger("mkdocs.plugins.convbridge_docs")

_ROLE = re.compile(r":(?:py:)?(func|class|mod|meth|data|attr|exc|obj|const):`([^`]+)`")
_BORDER = re.compile(r"^(=+)( +=+)+\s*$")
_SECTION = re.compile(r"^(Args|Arguments|Params|Parameters|Attributes|Other Parameters|Keyword Args|Keyword Arguments)"
                      r":\s*$")
_ITEM = re.compile(r"^[^:]*:(\s|$)")  # "name: description", "name (type): description", "name:"
_EXTERNAL = ("jax", "jnp", "lax", "torch", "np", "numpy", "flax", "nnx", "equinox", "eqx", "scipy", "ml_dtypes",
             "matplotlib", "rich", "click", "typing", "collections", "os", "sys", "pathlib", "math", "functools")


def _lookup(collection: Any, path: str) -> griffe.Object | griffe.Alias | None:
    try:
        found: griffe.Object | griffe.Alias = collection.get_member(path)
        return found
    except (KeyError, ValueError, AttributeError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _canonical(found: griffe.Object | griffe.Alias) -> str:
    if isinstance(found, griffe.Alias):
        try:
            return found.final_target.path
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return found.target_path
    return found.path


def _scopes(obj: griffe.Object | griffe.Alias) -> list[str]:
    """The paths a relative name is looked up in: the object itself, its parents up to the package."""
    scopes: list[str] = []
    current: griffe.Object | griffe.Alias | None = obj
    while current is not None:
        scopes.append(current.path)
        current = current.parent
    return scopes


@functools.cache
def _bound_names(filepath: Path) -> frozenset[str]:
    """Every name a module binds anywhere (``A, B = 1, 2``, ``self.layout = ...``, class annotations): griffe
    does not list all of them as members, and a role may name any."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(filepath.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return frozenset(names)


def _exists_in_source(target: str, obj: griffe.Object | griffe.Alias) -> bool:
    name = target.lstrip("~.").rstrip("()").split(".")[-1]
    filepath = obj.filepath
    return isinstance(filepath, Path) and filepath.suffix == ".py" and name in _bound_names(filepath)


def _resolve(target: str, obj: griffe.Object | griffe.Alias, collection: Any) -> str | None:
    name = target.lstrip("~.").rstrip("()")
    candidates = [f"{scope}.{name}" for scope in _scopes(obj)] + [name, f"convbridge.{name}"]
    for path in candidates:
        found = _lookup(collection, path)
        if found is not None:
            return _canonical(found)
    return None


def _role_repl(obj: griffe.Object | griffe.Alias, collection: Any, problems: list[str]) -> Any:
    def repl(match: re.Match[str]) -> str:
        text = match.group(2).strip()
        title, _, explicit = text.partition(" <")
        target = explicit.rstrip(">") if explicit else title
        if not explicit:
            title = target.lstrip("~.").split(".")[-1] if target.startswith("~") else target.lstrip(".")
        path = _resolve(target, obj, collection)
        code = f"<code>{html.escape(title)}</code>"
        if path is None:
            first = target.lstrip("~.").split(".")[0]
            if (first == "convbridge" or ("." not in target.lstrip("~.") and first not in _EXTERNAL)) \
                    and not _exists_in_source(target, obj):
                problems.append(target)
            return code
        return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

    return repl


def _doctest_fences(lines: list[str]) -> list[str]:
    """Wrap doctest blocks that start at column 0 (outside any Google section) in ```pycon fences."""
    out: list[str] = []
    i, fenced = 0, False
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith(">>>"):
            out.append(line)
            i += 1
            continue
        if out and out[-1].strip():
            out.append("")
        out.append("```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(re.sub(r"\s*# doctest:.*$", "", lines[i]) if lines[i].startswith(">>>") else lines[i])
            i += 1
        out.append("```")
    return out


def _cells(line: str, spans: list[tuple[int, int]]) -> list[str]:
    cells = []
    for k, (start, end) in enumerate(spans):
        chunk = line[start:] if k == len(spans) - 1 else line[start:end]
        cells.append(chunk.strip())
    return cells


def _in_fence(lines: list[str]) -> list[bool]:
    """Whether each line lies inside a fenced code block (the fences included)."""
    inside, flags = False, []
    for line in lines:
        fence = line.lstrip().startswith("```")
        flags.append(inside or fence)
        inside ^= fence
    return flags


def _tables(lines: list[str]) -> list[str]:
    """Turn simple reST tables into Markdown tables (a row whose first cell is empty continues the one above)."""
    out: list[str] = []
    fenced = _in_fence(lines)
    i = 0
    while i < len(lines):
        if fenced[i] or not _BORDER.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        border = lines[i]
        spans = [(m.start(), m.end() + 1) for m in re.finditer(r"=+", border)]
        borders = 1
        rows: list[list[str]] = []
        sections: list[list[list[str]]] = []
        i += 1
        while i < len(lines) and borders < 3:
            if _BORDER.match(lines[i]):
                borders += 1
                sections.append(rows)
                rows = []
                if i + 1 >= len(lines) or not lines[i + 1].strip():
                    i += 1
                    break
            elif lines[i].strip():
                cells = _cells(lines[i], spans)
                if rows and not cells[0]:
                    rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
                else:
                    rows.append(cells)
            i += 1
        header, body = (sections[0], sections[1]) if len(sections) >= 2 else ([[""] * len(spans)], sections[0])
        if out and out[-1].strip():
            out.append("")
        for k, row in enumerate(header[:1] + body):
            out.append("| " + " | ".join(cell.replace("|", "\\|") if "`" not in cell else cell for cell in row)
                       + " |")
            if k == 0:
                out.append("|" + "---|" * len(spans))
        if i < len(lines) and lines[i].strip():
            out.append("")
    return out


def _literal_markers(lines: list[str]) -> list[str]:
    out = []
    fenced = _in_fence(lines)
    for k, line in enumerate(lines):
        if not fenced[k] and line.rstrip().endswith("::") and (k + 1 >= len(lines) or not lines[k + 1].strip()):
            line = line.rstrip()[:-1]
            if line.strip() == ":":
                continue
        out.append(line)
    return out


def _section_items(lines: list[str]) -> list[str]:
    """Join multi-line item names in argument and attribute sections; turn an Attributes section of bare names into
    a sentence."""
    out: list[str] = []
    fenced = _in_fence(lines)
    i = 0
    while i < len(lines):
        match = None if fenced[i] else _SECTION.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        out.append(lines[i])
        i += 1
        items: list[list[str]] = []
        while i < len(lines) and lines[i].startswith(" ") and lines[i].strip():
            if len(lines[i]) - len(lines[i].lstrip()) <= 4 or not items:
                items.append([])
            items[-1].append(lines[i])
            i += 1
        if match.group(1) == "Attributes" and not any(_ITEM.match(" ".join(x.strip() for x in it)) for it in items):
            out[-1] = "**Attributes:** " + " ".join(x.strip() for it in items for x in it)
            continue
        for item in items:
            joined = " ".join(x.strip() for x in item)
            out.extend(item if _ITEM.match(item[0].strip()) or not _ITEM.match(joined) else ["    " + joined])
    return out


def rewrite(text: str, obj: griffe.Object | griffe.Alias, collection: Any) -> tuple[str, list[str]]:
    """Return ``text`` in Markdown terms, and the convbridge role targets that name nothing."""
    problems: list[str] = []
    text = _ROLE.sub(_role_repl(obj, collection, problems), text)
    lines = _section_items(_literal_markers(_tables(_doctest_fences(text.split("\n")))))
    return "\n".join(lines), problems


class RstDocstrings(griffe.Extension):
    """Rewrite every docstring of the loaded package once the object tree is complete."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        self._walk(pkg, loader.modules_collection, set())

    def _walk(self, obj: griffe.Object, collection: Any, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value, problems = rewrite(obj.docstring.value, obj, collection)
            for target in problems:
                where = f"{obj.relative_filepath}:{obj.docstring.lineno}" if obj.docstring.lineno else obj.path
                _log.warning(f"convbridge docs: {where}: ({obj.path}) the reference {target!r} names nothing")
        for member in obj.members.values():
            if isinstance(member, griffe.Object):  # aliases are rewritten where they are defined
                self._walk(member, collection, seen)
