"""The package's shape, checked: no import cycles, the reference is a leaf, frameworks and pictures stay in
their modules, and no size formula is written outside the geometry."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import convbridge

ROOT = Path(convbridge.__file__).parent
FRAMEWORKS = ("torch", "jax", "jaxlib", "flax", "equinox")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


@functools.cache
def _tree(path: Path) -> ast.Module:
    """A module's syntax tree, parsed once for every test here (parsing the package takes about a second)."""
    return ast.parse(path.read_text())


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported by statements in the module body (not in functions, not under TYPE_CHECKING)."""
    found = set()
    for node in _tree(path).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


def _graph() -> dict[str, set[str]]:
    return {name: {m for m in _top_level_imports(path) if m in MODULES and m != name}
            for name, path in MODULES.items()}


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_reference_is_a_leaf_that_knows_only_the_spec():
    for name, path in MODULES.items():
        if name.startswith("convbridge.reference"):
            deps = {m for m in _top_level_imports(path) if m.startswith("convbridge")}
            outside = {m for m in deps if not m.startswith(("convbridge.spec", "convbridge.reference"))}
            assert not outside, f"{name} imports {outside}"


def test_frameworks_and_pictures_stay_in_their_modules():
    for name, path in MODULES.items():
        roots = {m.partition(".")[0] for m in _top_level_imports(path)}
        # backends, porting's framework sides, convbridge's layers (which subclass a framework's Module), the
        # reference models (written in each framework) and diff's per-framework capture
        if not name.startswith(("convbridge.backends.", "convbridge.port._", "convbridge.nn.", "convbridge.models.",
                                "convbridge.divergence._")) or name in (
                "convbridge.port._common", "convbridge.nn._common", "convbridge.models._common",
                "convbridge.divergence._common"):
            assert not roots & set(FRAMEWORKS), f"{name} imports {roots & set(FRAMEWORKS)} at module level"
        if not name.startswith("convbridge.viz"):
            assert "matplotlib" not in roots and "PIL" not in roots, name


def test_no_size_formula_outside_the_geometry():
    """The dilated extent d * (k - 1), the conv output // s + 1, the transposed (n - 1) * s and the padded
    n + lo + hi are written once, in spec/geometry.py (code only: docstrings may state them)."""
    patterns = [r"\*\s*\(\s*\w+\s*-\s*1\s*\)", r"\(\s*\w+\s*-\s*1\s*\)\s*\*\s*\w+", r"\+\s*lo\s*\+\s*hi",
                r"//\s*\w+\s*\+\s*1\b"]
    offenders = []
    for name, path in MODULES.items():
        if name == "convbridge.spec.geometry":
            continue
        tree = _tree(path)
        docs = {n.body[0].lineno for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
                and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        doc_lines = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and n.lineno in docs:
                doc_lines |= set(range(n.lineno, n.end_lineno + 1))
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = re.sub(r"(f|rf)?(\"[^\"]*\"|'[^']*')", "''", line.split("#", 1)[0])
            if i not in doc_lines and any(re.search(p, code) for p in patterns):
                offenders.append(f"{name}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
