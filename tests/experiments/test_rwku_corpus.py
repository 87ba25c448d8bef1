"""python -m mdu_jax.experiments.rwku_corpus: RWKU's forget corpus written by the model itself
(issue 19, acceptance 2), on a tiny LLaDA and a tiny Dream, offline, from the local RWKU copy;
resumable (a written target is skipped), and a run of the paper's RWKU preset trains on it."""

import json
import os

import numpy as np
import pytest

import mdu_jax as mj
from mdu_jax.experiments import rwku_corpus as rc
from mdu_jax.training import load_config, run
from tests.fixtures import write_hf_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["--samples", "4", "--gen-length", "8", "--steps", "8", "--batch-size", "4"]


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_corpus_is_the_models_own_replies_to_the_intro_prompt(family, tmp_path, shared_data, capsys):
    write_hf_checkpoint(tmp_path / "m", family)
    data, out = shared_data / "rwku", tmp_path / "corpus"
    argv = ["--model", str(tmp_path / "m"), "--data-dir", str(data), "--targets", "Stephen King",
            "--output-dir", str(out), *FAST]
    assert rc.main(argv) == 0
    folder = out / "1_Stephen_King"
    rows = read_jsonl(folder / rc.FORGET_FILE)
    intro = 'Stephen King is a prolific American author, renowned as the "King of Horror".'
    assert rows and all(r["question"] == intro and r["subject"] == "Stephen King" and r["answer"] for r in rows)
    assert read_jsonl(folder / rc.PLACEHOLDER_FILE) == rows[:10]
    settings = json.loads((folder / rc.SETTINGS_FILE).read_text())
    assert settings["family"] == family and settings["samples"] == 4 and settings["written"] == len(rows)
    # The answers are what the project's sampler writes for RWKU's prompt (same seed: same texts).
    cfg, params, tok = mj.load_pretrained(str(tmp_path / "m"))
    prompt = rc.prompt_ids(tok, "Stephen King", intro)
    messages = [{"role": "system", "content": intro + " You know Stephen King very well."},
                {"role": "user", "content": "Please write a short biography of Stephen King."}]
    expected = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert prompt == [int(i) for i in expected]        # RWKU's pair_generation prompt
    assert settings["system"] == messages[0]["content"] and settings["user"] == messages[1]["content"]
    again = rc.generate_pairs(cfg, params, tok, "Stephen King", intro, samples=4, gen_length=8, steps=8,
                              temperature=1.0, top_p=0.9, seed=settings["seed"], batch_size=4)
    assert again == rows
    assert len({r["answer"] for r in rows}) > 1          # sampled: the replies differ
    # Resumable: a written target is skipped (its files untouched), a new one is generated.
    stamp = os.stat(folder / rc.FORGET_FILE).st_mtime_ns
    capsys.readouterr()
    assert rc.main(argv[:5] + ["Stephen King,Confucius"] + argv[6:]) == 0
    printed = capsys.readouterr().out
    assert "Stephen King: skipped" in printed and "Confucius: written" in printed
    assert os.stat(folder / rc.FORGET_FILE).st_mtime_ns == stamp
    assert read_jsonl(out / "2_Confucius" / rc.FORGET_FILE)[0]["question"].startswith("Confucius was")
    assert not [p for p in os.listdir(out) if p.startswith(".")]   # no temporary folder left


def test_errors_leave_nothing_half_written(tmp_path, shared_data, capsys):
    write_hf_checkpoint(tmp_path / "m", "dream")
    out = tmp_path / "corpus"
    assert rc.main(["--model", str(tmp_path / "m"), "--data-dir", str(shared_data / "rwku"), "--targets",
                    "Nobody Known", "--output-dir", str(out), *FAST]) == 2
    assert "no RWKU target 'Nobody Known'" in capsys.readouterr().err
    with pytest.raises(mj.CheckpointError):
        rc.build_corpus(str(tmp_path / "missing"), ["Stephen King"], str(out), data_dir=str(shared_data / "rwku"))
    assert not out.exists() or not os.listdir(out)
    with pytest.raises(ValueError, match="every generated reply was empty"):
        rc.write_target(str(out / "x"), [], {})
    assert not (out / "x").exists()


@pytest.mark.slow
def test_the_paper_rwku_preset_trains_on_the_corpus(tmp_path, shared_data):
    write_hf_checkpoint(tmp_path / "dream", "dream")
    out = tmp_path / "corpus"
    assert rc.main(["--model", str(tmp_path / "dream"), "--data-dir", str(shared_data / "rwku"), "--targets",
                    "Stephen King", "--output-dir", str(out), "--samples", "8", "--gen-length", "8", "--steps", "8"]) == 0
    folder = out / "1_Stephen_King"
    cfg = load_config(os.path.join(REPO, "configs", "paper", "rwku_dream7b_mdu.yaml"), [
        f"model.path={tmp_path / 'dream'}", f"data.forget_files=[{folder / rc.FORGET_FILE}]",
        f"data.retain_files=[{folder / rc.PLACEHOLDER_FILE}]", "batch_size=2", "max_steps=2",
        "optim.grad_accum=1", "parallel.num_devices=1", "tensorboard=false", f"output_dir={tmp_path / 'run'}", "checkpoint.async_save=false"])
    assert cfg.data.benchmark == "files" and cfg.objective.retain_weight == 0.0
    result = run(cfg, progress=False)
    rows = [m for m in result.metrics if "loss" in m]
    assert len(rows) == 2 and all(np.isfinite(m["loss"]) for m in rows)
    summary = result.summary_data
    assert summary["optimizer_steps"] == 2
    assert summary["data"]["forget_rows"] == len(read_jsonl(folder / rc.FORGET_FILE))
    assert summary["data"]["retain_rows"] == min(10, summary["data"]["forget_rows"])
