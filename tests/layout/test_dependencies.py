"""pyproject.toml declares exactly what the code imports: every third-party module that mdu_jax or
checkpoints_convert imports comes from a declared distribution (a dependency or, for optional
imports, an extra), and every declared dependency is imported."""

import ast
import importlib.metadata
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIRST_PARTY = {"mdu_jax", "checkpoints_convert"}
# Optional imports (guarded by ``try``) whose distribution may not be installed: module -> distribution.
OPTIONAL = {"tensorboardX": "tensorboardx"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalise(re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0))


def imported_top_level_modules() -> set[str]:
    """Top-level names of every absolute import in the two packages (module or function level)."""
    names = set()
    for package in FIRST_PARTY:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names.add(node.module.split(".")[0])
    return names - FIRST_PARTY - set(sys.stdlib_module_names) - {"__future__"}


def test_declared_dependencies_are_exactly_the_imported_ones():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {requirement_name(r) for r in project["dependencies"]}
    extras = {requirement_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    distributions = importlib.metadata.packages_distributions()
    imported = {}
    for module in imported_top_level_modules():
        dists = {normalise(d) for d in distributions.get(module, [])} or {OPTIONAL.get(module, "")} - {""}
        assert dists, f"{module}: imported but installed by no distribution (list it in OPTIONAL if it is optional)"
        imported[module] = dists
    undeclared = sorted(m for m, dists in imported.items() if not dists & (required | extras))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    optional_required = sorted(m for m in OPTIONAL if m in imported and imported[m] & required)
    assert not optional_required, f"optional imports declared as hard dependencies: {optional_required}"
    used = set().union(*imported.values())
    unused = sorted(required - used)
    assert not unused, f"declared in [project] dependencies but imported nowhere: {unused}"
