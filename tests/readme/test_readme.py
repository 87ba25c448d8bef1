"""README.md says what runs: every ```python block runs as written, every documented command parses.

Python blocks run in a fresh temporary working directory in which every placeholder path (a
string literal starting with ``path/to/``) holds a tiny checkpoint in the real HF layout and
with a tokenizer (Dream when the placeholder names Dream, LLaDA otherwise). Nothing else is
added: a block that uses a name it does not define fails.

Bash blocks: each ``python -m <module> ...`` command (continuation lines joined, environment
assignments and ``&&`` chains split off) is parsed by that module's own argument parser;
``--help`` is run; a training command with a config file is resolved through the real CLI
with ``--print-config`` (keys, types, values, sweep specs); a demo config is loaded by its loader. Training commands that differ in
keys that change the weights must not share an output folder (issue 16: the README's two
lines once trained into one folder, and the second silently reused the first's weights).
"""

import ast
import contextlib
import io
import os
import pathlib
import re
import shlex

import pytest
import yaml

from checkpoints_convert.__main__ import build_parser as convert_parser
import mdu_jax.training as training
from mdu_jax import evaluate, sweep_eval, train
from mdu_jax.demo import compare, pipeline, sequential
from mdu_jax.experiments import rwku_corpus
from mdu_jax.training import load_config, parse_sweep
from mdu_jax.typed_config import to_dict
from tests.fixtures import write_hf_checkpoint

REPO = pathlib.Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
PLACEHOLDER = "path/to/"


EXECUTED_ELSEWHERE = re.compile(r"<!-- executed by (\S+) -->\n$")


def _blocks(language: str) -> list[tuple[str, str]]:
    """(id, code) of each fenced block of `language`, the id naming its section.

    A block right after an ``<!-- executed by tests/x.py -->`` marker continues names defined
    earlier in the README (``cfg``, ``ids``); that test runs it with those names bound, and
    ``test_blocks_executed_elsewhere_have_their_test`` checks the test exists and names the marker.
    """
    out = []
    for m in re.finditer(rf"```{language}\n(.*?)```", README, re.S):
        if EXECUTED_ELSEWHERE.search(README[: m.start()]):
            continue
        heading = re.findall(r"^#+ (.+)$", README[: m.start()], re.M)
        name = re.sub(r"\W+", "_", heading[-1] if heading else "top").strip("_").lower()
        out.append((f"{name}_{len(out)}", m.group(1)))
    return out


PYTHON_BLOCKS = _blocks("python")
BASH_BLOCKS = _blocks("bash")


def _placeholders(code: str) -> list[str]:
    return sorted({n.value for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Constant)
                   and isinstance(n.value, str) and n.value.startswith(PLACEHOLDER)})


def test_blocks_executed_elsewhere_have_their_test():
    markers = re.findall(r"<!-- executed by (\S+) -->\n```", README)
    for test in markers:
        path = REPO / test
        assert path.is_file(), f"README names {test} as the test that runs its block; no such file"
        assert f"executed by {test}" in path.read_text(), f"{test} does not read the README block it is named for"


def test_the_readme_has_python_blocks_and_placeholders():
    assert PYTHON_BLOCKS, "no ```python block found in README.md"
    assert any(_placeholders(code) for _, code in PYTHON_BLOCKS)


@pytest.mark.parametrize("code", [c for _, c in PYTHON_BLOCKS], ids=[i for i, _ in PYTHON_BLOCKS])
def test_python_block_runs_as_written(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in _placeholders(code):
        write_hf_checkpoint(tmp_path / path, "dream" if "dream" in path.lower() else "llada")
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})  # noqa: S102 - the README's own code


def _commands() -> list[tuple[str, list[str]]]:
    """(block id, argv after ``python -m``) of every documented command."""
    out = []
    for block_id, code in BASH_BLOCKS:
        for line in code.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0]
            for part in line.split("&&"):
                words = shlex.split(part)
                if "python" in words and words[words.index("python") + 1: words.index("python") + 2] == ["-m"]:
                    out.append((block_id, words[words.index("python") + 2:]))
    return out


COMMANDS = _commands()


def _help_runs(main, argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "usage:" in out.getvalue()


def _demo_config(path, overrides):
    """The demo config of a documented demo command, loaded as ``python -m mdu_jax.train`` would."""
    if compare.is_compare_config(path):
        return compare.load_compare_config(path, overrides)
    if sequential.is_sequential_config(path):
        return sequential.load_sequential_config(path, overrides)
    return pipeline.load_demo_config(path, overrides)


def _train_argv(argv):
    """The resolved TrainConfig of a documented training command, or None (no config file, or a
    demo config: that one is loaded here, so a bad one fails, but it has no TrainConfig)."""
    args = train.build_parser().parse_intermixed_args(argv)
    if args.config is None or not os.path.isfile(REPO / args.config):
        return None
    if pipeline.is_demo_config(str(REPO / args.config)):
        assert _demo_config(str(REPO / args.config), list(args.overrides)).output_dir
        return None
    overrides = list(args.overrides) + ([f"export_hf={args.export_hf}"] if args.export_hf else []) \
        + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
    return load_config(str(REPO / args.config), overrides), args


def test_every_documented_command_was_found():
    modules = {argv[0] for _, argv in COMMANDS}
    assert {"mdu_jax.train", "mdu_jax.evaluate", "checkpoints_convert"} <= modules, modules


@pytest.mark.parametrize("argv", [a for _, a in COMMANDS], ids=[f"{b}:{' '.join(a)[:60]}" for b, a in COMMANDS])
def test_documented_command_parses_and_resolves(argv, monkeypatch, capsys):
    module, args = argv[0], argv[1:]
    monkeypatch.chdir(REPO)
    if module == "pytest":
        return  # the test command itself
    if module == "mdu_jax.train":
        if "--help" in args:
            return _help_runs(train.main, ["--help"])
        resolved = _train_argv(args)
        if resolved is None:  # the demo (no config) or a placeholder config ("--config ...")
            return
        _, parsed = resolved
        if parsed.sweep:
            key, values = parse_sweep(parsed.sweep)
            assert values, parsed.sweep
        assert train.main(args + ["--print-config"]) == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed == to_dict(resolved[0])
    elif module == "mdu_jax.evaluate":
        evaluate.build_parser().parse_args(args)
    elif module == "mdu_jax.sweep_eval":
        if "--help" in args:
            return _help_runs(sweep_eval.main, ["--help"])
        sweep_eval.build_parser().parse_args(args)
    elif module == "checkpoints_convert":
        convert_parser().parse_args(args)
    elif module == "mdu_jax.experiments.rwku_corpus":
        rwku_corpus.build_parser().parse_args(args)
    else:
        pytest.fail(f"README documents `python -m {module}`, which this test does not know how to check")


def test_documented_training_commands_that_differ_use_different_folders():
    runs = [r[0] for r in (_train_argv(a[1:]) for _, a in COMMANDS if a[0] == "mdu_jax.train" and "--help" not in a)
            if r is not None and not r[1].sweep]
    assert len(runs) >= 2
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            if os.path.abspath(a.output_dir) == os.path.abspath(b.output_dir):
                differences = training.run_folder.result_differences(to_dict(a), b)
                assert not differences, (a.output_dir, differences)
