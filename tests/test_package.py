"""The ec2 package's shape: its modules import each other without a cycle,
no function imports anything, and each module imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Mapping

import pytest

from tests.support import ROOT

PACKAGE = ROOT / "ec2"
MODULES = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")


def ec2_imports(tree: ast.Module) -> set[str]:
    """The ec2 modules a module's import statements name."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("ec2."))
        elif isinstance(node, ast.ImportFrom):
            module = ".".join(filter(None, ["ec2", node.module])) if node.level else (node.module or "")
            if module == "ec2":
                found.update(alias.name for alias in node.names if alias.name in MODULES)
            elif module.startswith("ec2."):
                found.add(module.split(".")[1])
    return found


def import_graph() -> dict[str, set[str]]:
    """Each ec2 module, and the ec2 modules it imports."""
    return {name: ec2_imports(ast.parse((PACKAGE / f"{name}.py").read_text())) - {name} for name in MODULES}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str]:
    """One cycle of the graph as the modules along it (the first repeated at the end); [] when none."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str]:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return []
        for imported in sorted(graph.get(name, ())):
            cycle = visit(imported, [*path, name])
            if cycle:
                return cycle
        done.add(name)
        return []

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle:
            return cycle
    return []


def imports_in_functions(tree: ast.Module) -> list[int]:
    """The line of every import statement inside a function (or lambda)."""
    lines: list[int] = []
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lines += [node.lineno for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))]
    return sorted(set(lines))


def test_the_cycle_finder_names_a_cycle_and_passes_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_import_finder_sees_every_form_of_ec2_import():
    source = (
        "import ec2.aws\nfrom ec2 import utils, constants as c\nfrom ec2.errors import BadInput\nfrom . import drift\n"
    )
    assert ec2_imports(ast.parse(source)) == {"aws", "utils", "constants", "errors", "drift"}


def test_the_ec2_modules_import_each_other_without_a_cycle():
    cycle = find_cycle(import_graph())
    assert not cycle, f"ec2 import cycle: {' -> '.join(cycle)}"


def test_preflight_is_imported_by_no_ec2_module():
    assert [name for name, imported in import_graph().items() if "preflight" in imported] == []


def test_no_function_in_ec2_imports_anything():
    found = {
        f"ec2/{name}.py": lines
        for name in MODULES
        if (lines := imports_in_functions(ast.parse((PACKAGE / f"{name}.py").read_text())))
    }
    assert found == {}, f"import statements inside functions (file: lines): {found}"


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module):
    result = subprocess.run(
        [sys.executable, "-c", f"import ec2.{module}"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
