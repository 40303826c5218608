"""The package's import graph, read from the source (imports inside functions included):
no cycle; the engine imports only itself, MNIST's constants, numpy and the standard
library; nothing below the command line imports click; readers of a run's records never
reach the training loop; neither the package nor the benchmarks import the tests."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mnist_mlp"
BENCHMARKS = ROOT / "benchmarks"
ENGINE = {"mnist_mlp.network", "mnist_mlp.optim", "mnist_mlp.metrics"}


def _modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path | None = None) -> tuple[set[str], set[str]]:
    """The package's modules that ``name`` (at ``path``; default: the package's module)
    imports, and the top-level names of the other packages it imports, anywhere in its
    source."""
    path = path or MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    internal, external = set(), set()

    def add(target: str, names: list[str]) -> None:
        if target.split(".")[0] != "mnist_mlp":
            external.add(target.split(".")[0])
            return
        submodules = {f"{target}.{a}" for a in names if f"{target}.{a}" in MODULES}
        internal.update(submodules)              # `from . import checkpoint`: a module each
        if len(submodules) < len(names) or not names:     # names of ``target`` itself
            assert target in MODULES, f"{name} imports {target}, which is no module"
            internal.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, [])
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level == 0:
                add(node.module, names)
                continue
            base = package.split(".")
            base = base[:len(base) - (node.level - 1)]
            assert base, f"{name}: a relative import above the package"
            add(".".join(base + ([node.module] if node.module else [])), names)
    internal.discard(name)
    return internal, external - {"__future__"}


GRAPH = {name: _imports(name) for name in MODULES}


def test_the_graph_is_read_whole():
    """Imports at the top, inside functions, of modules and of names in a package."""
    assert len(MODULES) > 20 and "mnist_mlp.cli.train" in MODULES
    internal = {name: edges for name, (edges, _) in GRAPH.items()}
    assert {"mnist_mlp.train", "mnist_mlp.dataset", "mnist_mlp"} <= internal["mnist_mlp.run"]
    assert "mnist_mlp.plots" in internal["mnist_mlp.run"]          # inside CurvesCallback
    assert {"mnist_mlp.metrics", "mnist_mlp.resume"} <= internal["mnist_mlp.cli.eval"]
    assert "mnist_mlp.cli.common" in internal["mnist_mlp.cli"]
    assert "click" in GRAPH["mnist_mlp.cli.common"][1]
    assert "PIL" in GRAPH["mnist_mlp.gallery"][1]                  # inside save_grid


def test_there_is_no_import_cycle():
    internal = {name: edges for name, (edges, _) in GRAPH.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name):] + [name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(internal[name]):
            visit(target, path + [name])
        done.add(name)

    for name in sorted(internal):
        visit(name, [])


@pytest.mark.parametrize("name", sorted(ENGINE))
def test_the_engine_imports_only_numpy_the_stdlib_and_mnist(name):
    internal, external = GRAPH[name]
    assert internal <= ENGINE | {"mnist_mlp.mnist"}, internal
    assert external <= {"numpy"} | set(sys.stdlib_module_names), external


COMMAND_LINE = ("mnist_mlp.cli", "mnist_mlp.__main__")   # `python -m mnist_mlp` runs the CLI


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.startswith(COMMAND_LINE)))
def test_nothing_below_the_command_line_imports_click(name):
    internal, external = GRAPH[name]
    assert "click" not in external
    assert not any(target.startswith("mnist_mlp.cli") for target in internal), internal


def _reached(name: str) -> set[str]:
    """The package's modules that importing ``name`` may import, directly or through
    others."""
    seen, todo = set(), [name]
    while todo:
        for target in GRAPH[todo.pop()][0] - seen:
            seen.add(target)
            todo.append(target)
    return seen


# Modules that only read a run's records (its log, its checkpoints): the format is theirs,
# the training loop is not.
READERS = ("mnist_mlp.records", "mnist_mlp.runfiles", "mnist_mlp.checkpoint",
           "mnist_mlp.plots", "mnist_mlp.export", "mnist_mlp.sweep.results")


@pytest.mark.parametrize("name", READERS)
def test_readers_of_records_never_reach_the_training_loop(name):
    assert "mnist_mlp.train" not in _reached(name), sorted(_reached(name))


def test_the_page_reads_records_without_importing_the_loop():
    assert "mnist_mlp.train" not in GRAPH["mnist_mlp.serve"][0]
    assert "mnist_mlp.records" in GRAPH["mnist_mlp.serve"][0]


def test_the_loop_is_reached_from_a_run():
    assert "mnist_mlp.train" in _reached("mnist_mlp.run")      # the check can fail


SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


@pytest.mark.parametrize("path", [*MODULES.values(), *SCRIPTS],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_neither_the_package_nor_the_benchmarks_import_the_tests(path):
    name = next((n for n, p in MODULES.items() if p == path), f"benchmarks.{path.stem}")
    _, external = _imports(name, path)
    assert "tests" not in external and "conftest" not in external, external
