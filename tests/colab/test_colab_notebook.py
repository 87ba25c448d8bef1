"""colab/mdu_jax.ipynb: committed without outputs, installs this project, uses only tested public APIs,
and runs headless from the first cell to the last in smoke mode (demo model, generated data, CPU)."""

import ast
import builtins
import datetime
import importlib
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import tomllib

import nbformat
import pytest

from tests.conftest import xla_flags

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "colab" / "mdu_jax.ipynb"
PROJECT_PACKAGES = ("mdu_jax", "checkpoints_convert")
# Public names whose tests live here: the smoke run below reads their output back.
TESTED_HERE = {("mdu_jax.eval.results", "write_result")}


def _notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def _code_cells():
    return [c for c in _notebook().cells if c.cell_type == "code"]


def _install_cell():
    cells = [c for c in _code_cells() if "pip" in c.source and "install" in c.source]
    assert len(cells) == 1, "expected exactly one install cell"
    return cells[0].source


# ---------------------------------------------------------------------------------------------
# The committed file


def test_committed_notebook_is_valid_and_has_no_outputs():
    nb = _notebook()
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert "widgets" not in nb.metadata
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has committed outputs"
            assert cell.execution_count is None, f"cell {i} has an execution count"
        assert "execution" not in cell.metadata, f"cell {i} carries execution timings"
    assert nb.cells[0].cell_type == "markdown" and "colab-badge.svg" in nb.cells[0].source


def test_first_code_cells_set_parameters_then_install():
    cells = _code_cells()
    assert "parameters" in cells[0].metadata.get("tags", [])
    assert 'os.environ.get("MDU_JAX_SMOKE"' in cells[0].source
    assert cells[1].source == _install_cell()


def _run_install_cell(monkeypatch, cwd, importable):
    """Executes the install cell in `cwd` with the package (not) importable; returns the commands it ran."""
    calls = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (real_find_spec(name, *a) if importable or name != "mdu_jax" else None))
    monkeypatch.setattr(subprocess, "check_call", lambda cmd, *a, **k: calls.append(list(cmd)))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("COLAB_TPU_ADDR", raising=False)
    monkeypatch.setenv("PATH", "")  # no nvidia-smi: the plain (CPU) install
    monkeypatch.chdir(cwd)
    namespace = {"os": os}
    exec(compile(_install_cell(), "<install cell>", "exec"), namespace)
    return calls, namespace


def test_install_cell_clones_and_installs_this_project(monkeypatch, tmp_path):
    name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    calls, ns = _run_install_cell(monkeypatch, tmp_path, importable=False)
    url = ns["REPO_URL"]
    assert re.fullmatch(rf"https://github\.com/[\w.-]+/{re.escape(name)}", url), url
    clone = str((tmp_path / name).resolve())
    assert calls == [["git", "clone", "--depth", "1", url, clone],
                     [sys.executable, "-m", "pip", "install", "-q", "-e", clone]]
    assert sys.path[0] == clone


def test_install_cell_installs_the_checkout_it_runs_in(monkeypatch):
    calls, _ = _run_install_cell(monkeypatch, ROOT / "colab", importable=False)
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", "-e", str(ROOT)]]


def test_install_cell_does_nothing_when_mdu_jax_is_importable(monkeypatch, tmp_path):
    calls, _ = _run_install_cell(monkeypatch, tmp_path, importable=True)
    assert calls == []


# ---------------------------------------------------------------------------------------------
# What the code cells use


def _project_names(tree: ast.AST) -> set[tuple[str, str]]:
    """(module, name) for every project name the code imports or reads as an attribute of a project module."""
    modules: dict[str, str] = {}   # local alias -> project module
    used = set()

    def is_module(dotted):
        try:
            return importlib.util.find_spec(dotted) is not None
        except ModuleNotFoundError:
            return False

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PROJECT_PACKAGES:
                    modules[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PROJECT_PACKAGES:
            for a in node.names:
                if is_module(f"{node.module}.{a.name}"):
                    modules[a.asname or a.name] = f"{node.module}.{a.name}"
                else:
                    used.add((node.module, a.name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            used.add((modules[node.value.id], node.attr))
    return used | {(m, "") for m in modules.values()}


def _notebook_tree() -> ast.Module:
    return ast.parse("\n\n".join(c.source for c in _code_cells()))


def test_notebook_uses_only_public_project_apis_that_tests_cover():
    used = _project_names(_notebook_tree())
    assert ("mdu_jax.training", "run") in used and ("mdu_jax.eval.tofu", "evaluate_tofu") in used
    tests = {p: p.read_text() for p in (ROOT / "tests").rglob("*.py") if "colab" not in p.parts}
    for module, name in sorted(used):
        assert module != "mdu_jax.demo.pipeline", "the notebook must build the flow from the public API"
        mod = importlib.import_module(module)
        if not name or (name.startswith("__") and name.endswith("__")):
            continue
        assert not name.startswith("_"), f"{module}.{name} is private"
        assert hasattr(mod, name), f"{module} has no {name!r}"
        if (module, name) in TESTED_HERE:
            continue
        last = module.rsplit(".", 1)[-1]
        word = re.compile(rf"\b{re.escape(name)}\b")
        covering = [p for p, text in tests.items() if word.search(text) and (module in text or last in text)]
        assert covering, f"{module}.{name} is used by the notebook but no test outside tests/colab uses it"


def test_every_name_the_cells_read_is_defined_somewhere():
    # Full mode is not executed in CI: at least every name it reads must be bound by some cell.
    tree = _notebook_tree()
    bound = set(dir(builtins)) | {"display"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    assert not read - bound, f"names read but never bound: {sorted(read - bound)}"


# ---------------------------------------------------------------------------------------------
# The headless run


def _kernelspec(folder: pathlib.Path, env: dict) -> None:
    """A 'python3' kernel that runs this interpreter (the test's venv) with `env` on top."""
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (mdu-jax test venv)", "language": "python", "env": env}))


def _cell_seconds(nb) -> dict[int, float]:
    """{cell index: seconds from its input reaching the kernel to its reply} (nbclient's timing record)."""
    def at(stamp):
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    return {i: round((at(c.metadata.execution["shell.execute_reply"])
                      - at(c.metadata.execution["iopub.execute_input"])).total_seconds(), 1)
            for i, c in enumerate(nb.cells) if c.cell_type == "code"}


@pytest.mark.slow
def test_notebook_runs_headless_in_smoke_mode(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    from mdu_jax.eval.results import read_result

    work = tmp_path / "work"
    env = {"MDU_JAX_SMOKE": "1", "MDU_JAX_WORKDIR": str(work), "JAX_PLATFORMS": "cpu",
           # two CPU devices, so that the runtime plan's FSDP mesh really shards the parameters
           "XLA_FLAGS": xla_flags(2),
           # its SFT is compute-bound: full XLA optimisation (tests/conftest.py sets the quick mode)
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "IPYTHONDIR": str(tmp_path / "ipython"), "MPLBACKEND": "agg"}
    _kernelspec(tmp_path / "jupyter", env)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = _notebook()
    client = NotebookClient(nb, kernel_name="python3", timeout=600, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the failing cell
    print(f"\nnotebook (smoke mode): {time.perf_counter() - started:.1f} s; seconds per code cell: "
          f"{_cell_seconds(nb)}")

    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    before, after = read_result(work / "eval" / "before.json"), read_result(work / "eval" / "mdu_tau1.json")
    assert before["benchmark"] == after["benchmark"] == "tofu"
    for r in (before, after):
        assert 0 <= r["aggregates"]["forget_Q_A_Prob"] <= 1 and 0 <= r["aggregates"]["model_utility"] <= 1
    # The short SFT taught the forget answers; the short MDU run made them less likely.
    print(f"forget answer probability {before['aggregates']['forget_Q_A_Prob']:.3f} -> "
          f"{after['aggregates']['forget_Q_A_Prob']:.3f}")
    assert after["aggregates"]["forget_Q_A_Prob"] < before["aggregates"]["forget_Q_A_Prob"]
    assert read_result(work / "eval" / "mdu_tau0.json")["benchmark"] == "tofu"
    export = work / "export" / "llada-mdu-tau1"
    assert (export / "config.json").is_file() and list(export.glob("*.safetensors"))
    assert (work / "tau_tradeoff.png").stat().st_size > 10_000
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "embedding sharding: P(None, 'fsdp')" in outputs  # the plan's mesh spans both devices
    assert "largest |exported - trained| difference: 0.0" in outputs
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert shown, "the trade-off plot was not displayed"
