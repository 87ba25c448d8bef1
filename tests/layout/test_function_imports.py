"""Imports sit at the top of each module; inside a function only for the optional or
platform-specific dependencies listed (with the reason) in ALLOWED."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("mdu_jax", "checkpoints_convert")

# Module prefix -> why it may be imported inside a function.
ALLOWED = {
    "matplotlib": "plots only; a 1.7 s import, and the Agg backend must be chosen before pyplot loads",
    "tensorboardX": "optional TensorBoard writer; it imports torch when installed (~4 s of every command's start-up)",
    "datasets": "Hub downloads only; a 1.4 s import (pandas, pyarrow) that a run on local data never needs",
    "jax.experimental.pallas.ops.tpu": "TPU-only Pallas kernels (splash attention), imported where they run",
}


def function_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import statement nested in a function or lambda of `source`."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            elif in_function and isinstance(child, ast.ImportFrom):
                found.append((child.lineno, "." * child.level + (child.module or "")))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(source), False)
    return found


def allowed(module: str) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in ALLOWED)


def test_function_imports_are_found_at_any_depth():
    source = ("import os\n"
              "def f():\n    import json\n    class C:\n        def g(self):\n            from numpy import linalg\n"
              "h = lambda: __import__('x')\n")
    assert function_imports(source) == [(3, "json"), (6, "numpy")]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_imports_inside_functions_except_optional_dependencies(package):
    offenders = [f"{path.relative_to(ROOT)}:{line}: {module}"
                 for path in sorted((ROOT / package).rglob("*.py"))
                 for line, module in function_imports(path.read_text()) if not allowed(module)]
    assert not offenders, "imports inside functions (move them to the top of the module):\n" + "\n".join(offenders)
