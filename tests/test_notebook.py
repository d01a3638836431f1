"""The tutorial notebook as committed (valid, outputs stripped, plain Python, offline), and the runner that executes
it (scripts/run_notebook.py). Executing the notebook itself is `make notebook`; the slow test here runs the runner
on tiny notebooks."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "convolutions_in_jax_and_pytorch.ipynb"
RUNNER = ROOT / "scripts" / "run_notebook.py"


@pytest.fixture(scope="module")
def nb() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


@pytest.fixture(scope="module")
def runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_notebook", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_notebook"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _code(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_the_notebook_is_valid_nbformat_4_with_a_python3_kernel(nb: nbformat.NotebookNode) -> None:
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert len({c.id for c in nb.cells}) == len(nb.cells)


def test_it_is_committed_with_outputs_stripped(nb: nbformat.NotebookNode) -> None:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs: strip them (run_notebook.py writes none by default)"
            assert cell.execution_count is None, f"cell {i} has an execution count"
            assert "execution" not in cell.metadata, f"cell {i} keeps execution timings in its metadata"
        assert "attachments" not in cell, f"cell {i} has attachments"
    assert "widgets" not in nb.metadata


def test_every_code_cell_is_plain_python(nb: nbformat.NotebookNode) -> None:
    for i, source in enumerate(_code(nb)):
        ast.parse(source, filename=f"cell {i}")  # a magic (%time, !pip) or a syntax error fails here
        assert not any(line.lstrip().startswith(("%", "!")) for line in source.splitlines()), source


def test_it_uses_no_network(nb: nbformat.NotebookNode) -> None:
    """Statically: nothing that downloads or opens a connection (the runner also refuses them at run time)."""
    text = "\n".join(_code(nb))
    tree = ast.parse(text)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"urllib", "requests", "http", "httpx", "socket", "urllib3", "aiohttp", "ftplib"}
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        for kw in call.keywords:
            assert not (kw.arg == "download" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False))
    assert "http://" not in text and "https://" not in text and "download_cifar10" not in text


def test_it_never_asserts_that_torch_and_jax_differ(nb: nbformat.NotebookNode) -> None:
    """With the pinned versions the two are often bitwise identical on a CPU: nothing may depend on a difference."""
    for source in _code(nb):
        assert not any(isinstance(n, ast.Assert) for n in ast.walk(ast.parse(source))), source


def test_it_tells_the_whole_story(nb: nbformat.NotebookNode) -> None:
    code = "\n".join(_code(nb))
    for needle in ("torch.nn.Conv2d(", "flax.linen.Conv(", "cb.explain((32, 3, 32, 32), (4, 3, 5, 5))",
                   "cb.as_matmul(", "draw_matmul(", "cb.conv_matrix(", "load_dataset()", "normalize(",
                   "jax.random.normal(jax.random.PRNGKey(42), (4, 3, 5, 5))", 'padding="valid"',
                   '("NCHW", "OIHW", "NCHW")', "lax.conv_general_dilated(", "np.array_equiv(", "cb.compare(",
                   "side_by_side(", 'stride=2, padding="same"', "cb.port.check(", "cb.port.to_flax(",
                   "cb.port.to_torch(", "ConvTranspose", "jax.eval_shape(", "cb.port.state_dict(", "LeNet",
                   "cb.diff(", "bench.run_suite("):
        assert needle in code, needle
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "measured on the machine that ran this notebook" in prose
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("## ")]
    assert len(headings) >= 11, headings


def test_the_kernelspec_runs_this_interpreter(runner: ModuleType, tmp_path: Path) -> None:
    spec = json.loads((runner._kernelspec(tmp_path) / "python3" / "kernel.json").read_text())
    assert spec["argv"][:3] == [sys.executable, "-m", "ipykernel_launcher"]


def test_the_kernel_check_refuses_another_python(runner: ModuleType) -> None:
    def probe(prefix: str) -> nbformat.NotebookNode:
        cell = nbformat.v4.new_code_cell(runner.PROBE)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=json.dumps(
            {"executable": "/usr/bin/python3", "prefix": prefix}) + "\n")]
        return cell

    assert runner._check_kernel(probe(sys.prefix)) is None
    assert "not this Python" in runner._check_kernel(probe("/usr"))
    empty = nbformat.v4.new_code_cell(runner.PROBE)
    assert "could not be read" in runner._check_kernel(empty)


def test_runner_helpers(runner: ModuleType) -> None:
    assert runner._plain("\x1b[31mZeroDivisionError\x1b[39m: x") == "ZeroDivisionError: x"
    assert runner._first_line("\n\n  import x\nimport y") == "  import x"
    assert runner._first_line("") == "(empty)"
    with pytest.raises(SystemExit) as stop:
        runner.main([str(RUNNER.parent / "no-such.ipynb")])
    assert stop.value.code == 2


@pytest.mark.slow
def test_the_runner_fails_on_an_error_and_on_the_network_and_writes_nothing(tmp_path: Path) -> None:
    """Starts real kernels (about 2 s each)."""
    def notebook(name: str, *sources: str) -> Path:
        book = nbformat.v4.new_notebook()
        book.cells = [nbformat.v4.new_markdown_cell("# t"), *(nbformat.v4.new_code_cell(s) for s in sources)]
        path = tmp_path / name
        nbformat.write(book, path)
        return path

    def run(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(RUNNER), str(path), *args], capture_output=True, text=True,
                              timeout=120)

    ok = notebook("ok.ipynb", "import sys\nprint(sys.prefix)", "2 + 3")
    before = ok.read_bytes()
    done = run(ok, "--output", str(tmp_path / "out.ipynb"))
    assert done.returncode == 0, done.stderr
    assert "ok: 2 code cells" in done.stdout and ok.read_bytes() == before
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["text"].strip() == sys.prefix  # the kernel is this venv's Python
    assert executed.cells[2].outputs[0]["data"]["text/plain"] == "5"
    assert [c.execution_count for c in executed.cells[1:]] == [1, 2]

    failing = notebook("fail.ipynb", "x = 1", "1 / 0", "print('never')")
    before = failing.read_bytes()
    done = run(failing)
    assert done.returncode == 1 and failing.read_bytes() == before
    assert "cell 2 (1 / 0) failed" in done.stderr and "ZeroDivisionError" in done.stderr
    assert "\x1b[" not in done.stderr

    online = notebook("net.ipynb", "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=1)")
    done = run(online)
    assert done.returncode == 1 and "network access refused" in done.stderr
