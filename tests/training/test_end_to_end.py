"""SFT a tiny LLaDA on a handful of real TOFU pairs until it knows them, then MDU forgets the forget part.

Prints the numbers it asserts on. The tokenizer is fitted on those pairs (the demo's builder), the
model is a tiny real-layout LLaDA written as an HF folder, and likelihoods are MDU's Eq. 14
per-token NLL (exp(-nll) is the answer probability the MDU paper reports).
"""

import json

import numpy as np
import pytest

import mdu_jax as mj
from mdu_jax.training.config import load_config
from mdu_jax.data.encoding import encode_pair
from mdu_jax.demo.model import write_demo_model
from mdu_jax.demo.tokenizer import build_tokenizer
from mdu_jax.likelihood import eq14_nll
from mdu_jax.training import run

N_FORGET, N_RETAIN = 4, 8
# Margins: forget NLL must rise by at least 1 nat/token (the answer probability falls by e x or
# more); the retain NLL may rise by at most a third of that rise.
MIN_FORGET_RISE = 1.0
# Measured here (350 SFT steps at lr 7e-3, then 30 MDU steps): after SFT forget / retain NLL
# 0.051 / 0.059, after MDU 12.48 / 0.36. At 300 SFT steps the pairs were only partly learnt
# (0.21 / 0.19), so 350 keeps a margin of about 10x on the 0.5 "learnt" bound.


def _pairs(tok, rows):
    out = []
    for r in rows:
        ids, plen = encode_pair(tok, r["question"], r["answer"])
        prompt = ids[:plen]
        answer = tok(r["answer"], add_special_tokens=False)["input_ids"]
        out.append((prompt, answer))
    return out


def _nll(folder, rows):
    cfg, params, tok = mj.load_pretrained(folder)
    # One length bucket for all rows: forget and retain pairs share one compiled program.
    return float(np.mean(eq14_nll(cfg, params, _pairs(tok, rows), mc_samples=32, seed=0, buckets=[128])))


@pytest.mark.slow
@pytest.mark.compute_bound
def test_sft_then_mdu_on_tofu_pairs(tmp_path, shared_data):
    forget = json.loads((shared_data / "tofu" / "forget01.json").read_text())[:N_FORGET]
    retain = json.loads((shared_data / "tofu" / "retain99.json").read_text())[:N_RETAIN]
    for name, rows in (("forget", forget), ("retain", retain)):
        (tmp_path / f"{name}.json").write_text(json.dumps(rows))
    texts = [r["question"] + " " + r["answer"] for r in forget + retain]
    build_tokenizer(texts, tmp_path / "tok", "llada", vocab_size=512)
    write_demo_model(tmp_path / "init", tmp_path / "tok", hidden_size=64, num_layers=2, num_heads=4)
    common = {
        "data": {"benchmark": "files", "forget_files": [str(tmp_path / "forget.json")],
                 "retain_files": [str(tmp_path / "retain.json")], "max_length": 128, "buckets": [128]},
        "parallel": {"mesh": {"data": 1, "fsdp": 1, "tensor": 1}, "num_devices": 1},
        "tensorboard": False, "log_every": 25, "batch_size": 12,
    }
    sft = load_config(base=dict(common, model={"path": str(tmp_path / "init"), "dtype": "float32"},
                                 objective={"method": "sft"}, optim={"lr": 7e-3, "warmup_ratio": 0.05},
                                 max_steps=350, output_dir=str(tmp_path / "sft")))
    run(sft, progress=False)
    sft_dir = str(tmp_path / "sft" / "final")
    before = {"forget": _nll(sft_dir, forget), "retain": _nll(sft_dir, retain)}
    print(f"after SFT: forget NLL {before['forget']:.3f}, retain NLL {before['retain']:.3f} nats/token")
    assert before["forget"] < 0.5 and before["retain"] < 0.5, before  # the pairs are learnt

    mdu = load_config(base=dict(common, model={"path": sft_dir, "dtype": "float32"},
                                objective={"method": "mdu", "tau": 0.0, "retain_weight": 1.0},
                                optim={"lr": 1e-3, "warmup_ratio": 0.0}, max_steps=30,
                                output_dir=str(tmp_path / "mdu")))
    run(mdu, progress=False)
    after = {k: _nll(str(tmp_path / "mdu" / "final"), rows) for k, rows in (("forget", forget), ("retain", retain))}
    print(f"after MDU: forget NLL {after['forget']:.3f}, retain NLL {after['retain']:.3f} nats/token")
    forget_rise = after["forget"] - before["forget"]
    retain_rise = after["retain"] - before["retain"]
    assert forget_rise >= MIN_FORGET_RISE, (before, after)
    assert retain_rise <= forget_rise / 3, (before, after)
