"""The command line: --help explains every option; import and export run end to end."""

import os
import subprocess
import sys

import pytest

from checkpoints_convert.__main__ import build_parser, main
from mdu_jax.checkpoints import orbax_params as ckpt
from tests.convert.convert_helpers import load_hf_tensors
from tests.fixtures import write_hf_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def subparsers(parser):
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


@pytest.mark.parametrize("command", ["import", "export"])
def test_help_explains_every_option(command):
    sub = subparsers(build_parser())[command]
    text = sub.format_help()
    for action in sub._actions:
        for option in action.option_strings:
            assert option in text
        assert action.help and len(action.help) > 10, action.option_strings
    for option in ("--src", "--dst", "--dtype", "--overwrite", "--no-progress"):
        assert option in text
    if command == "export":
        assert "--like" in text and "--max-shard-size" in text


def test_module_help_runs_as_a_program():
    out = subprocess.run([sys.executable, "-m", "checkpoints_convert", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "import" in out.stdout and "export" in out.stdout
    assert "temporary folder" in out.stdout


def test_cli_round_trip(tmp_path, capsys):
    _, sd = write_hf_checkpoint(tmp_path / "hf", "dream", dtype="bfloat16", shards=3, seed=51)
    assert main(["import", "--src", str(tmp_path / "hf"), "--dst", str(tmp_path / "ckpt"), "--dtype", "fp32"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "ckpt")
    assert ckpt.read_marker(tmp_path / "ckpt")["param_dtype"] == "float32"
    assert main(["export", "--src", str(tmp_path / "ckpt"), "--dst", str(tmp_path / "out"), "--like",
                 str(tmp_path / "hf"), "--max-shard-size", "10KB", "--no-progress"]) == 0
    out = load_hf_tensors(tmp_path / "out")
    # Stored as fp32, exported in the like-folder's bf16: the original bits come back.
    assert sorted(out) == sorted(sd) and all(out[n].dtype == sd[n].dtype and out[n].equal(sd[n]) for n in sd)


def test_missing_required_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["import", "--src", "x"])
    assert e.value.code == 2 and "--dst" in capsys.readouterr().err
