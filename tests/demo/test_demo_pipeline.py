"""The embedded demo, reduced (CI size), end to end and offline: forget drops, retain holds."""

import contextlib
import dataclasses
import io
import json
import os
import socket

import jax
import pytest
import yaml

from mdu_jax.demo import compare, pipeline
from mdu_jax.demo.pipeline import (demo_config, load_demo_config, paraphrases, prepare, row_length, run_demo,
                                   sft_stage, unlearn_stage)
from mdu_jax.typed_config import load_yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REDUCED = ["demo.size=ci", "eval.mc_samples=16"]


def run_facts_per_person(run):
    return demo_config(run).facts_per_person

# Margins on the reduced demo (10 forget / 25 retain questions, D=64 x 2 layers, 600 SFT + 50
# MDU steps at lr 5e-4 on 34-token rows), on fact recall (is the key fact in the generated
# answer; ROUGE also counts the shared sentence templates). Ten forget / ten retain fact
# questions move a recall in steps of 0.1. Measured on world 0 (the test's), fact recall
# forget / retain before -> after MDU, twin forget:
#   this 2-core CPU, stage seeds 0, 1, 2, 3: 0.9/0.9 -> 0.1/1.0, 1.0/0.9 -> 0.1/0.9,
#     1.0/1.0 -> 0.0/1.0, 0.8/0.9 -> 0.1/0.9; twin 0 in all four;
#   the CI machine's CPU, stage seed 0: 0.9/0.7 -> 0.3/0.9, twin 0;
#   this CPU again at a later commit (the same settings, stage seed 0): 0.9/0.9 -> 0.3/0.9, twin 0.
# So: SFT recall at least 0.7 / 0.6 (one step below the lowest seen), MDU at most half of the
# SFT forget recall (worst seen: a third) and at least 80% of its retain recall (worst seen:
# 100%). Other worlds are not this robust at CI size: on worlds 1, 2, 3 the 600 SFT steps left
# forget recall at 0.3, 0.0, 0.3 (the facts are not memorised, so there is nothing to forget),
# which is why the test pins world 0 and the README's claims come from the full-size demo.
SFT_MIN_FORGET_RECALL = 0.7
SFT_MIN_RETAIN_RECALL = 0.6
FORGET_MAX_RATIO = 0.5
RETAIN_MIN_RATIO = 0.8


def refuse_network(mp: pytest.MonkeyPatch) -> None:
    """Through `mp`: any attempt to open a network connection fails the test."""
    def refuse(self, address, *args, **kwargs):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"the demo tried to reach the network: {address}")
        return real_connect(self, address, *args, **kwargs)  # local and unix sockets are fine

    real_connect = socket.socket.connect
    mp.setattr(socket.socket, "connect", refuse)
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_DATASETS_OFFLINE", "1")


def refuse_training(cfg, **kwargs):
    raise AssertionError(f"trained again: {cfg.output_dir}")


@pytest.fixture(scope="module")
def reduced_demo(tmp_path_factory):
    """The reduced demo run once for this file, offline: (run config, summary, what it printed,
    its output folder, whose cache the comparison below reuses)."""
    out = tmp_path_factory.mktemp("reduced") / "demo"
    run = load_demo_config(None, REDUCED + [f"output_dir={out}"])
    printed = io.StringIO()
    # Set up before the tests' own compute_bound switch (conftest._compile_mode): the same full
    # XLA optimisation, which the measured spread above was taken with.
    quick = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
            refuse_network(mp)
            summary = run_demo(run, progress=False)
    finally:
        jax.config.update("jax_disable_most_optimizations", quick)
    return run, summary, printed.getvalue(), out


@pytest.mark.slow
@pytest.mark.compute_bound
def test_reduced_demo_forgets_the_forget_authors_and_keeps_the_rest(reduced_demo):
    run, summary, out, folder = reduced_demo
    aggs = summary["aggregates"]
    before, after, twin = aggs["before (SFT)"], aggs["after MDU (tau=1)"], aggs["retain-only twin"]
    print(f"forget ROUGE {before['forget_Q_A_ROUGE']:.3f} -> {after['forget_Q_A_ROUGE']:.3f}; "
          f"retain ROUGE {before['retain_Q_A_ROUGE']:.3f} -> {after['retain_Q_A_ROUGE']:.3f}; forget fact recall "
          f"{before['forget_fact_recall']:.3f} -> {after['forget_fact_recall']:.3f} "
          f"(twin {twin['forget_fact_recall']:.3f})")
    # SFT taught the facts
    assert before["forget_fact_recall"] >= SFT_MIN_FORGET_RECALL
    assert before["retain_fact_recall"] >= SFT_MIN_RETAIN_RECALL
    assert after["forget_fact_recall"] <= FORGET_MAX_RATIO * before["forget_fact_recall"]
    assert after["retain_fact_recall"] >= RETAIN_MIN_RATIO * before["retain_fact_recall"]
    assert twin["forget_fact_recall"] <= 0.2  # the twin never saw the forget facts
    # Every model carries the checks that expose degenerate forgetting, in the real evaluation path.
    for name, a in aggs.items():
        for key in ("forget_fact_recall", "retain_fact_recall", "forget_empty_rate", "forget_short_rate",
                    "forget_judge_nll", "model_utility"):
            assert isinstance(a.get(key), float), (name, key)
    for name in ("before (SFT)", "after MDU (tau=1)"):
        for key in ("forget_quality", "forget_ks_statistic", "forget_log_tr_w1", "forget_relative_length"):
            assert isinstance(aggs[name].get(key), float), (name, key)
    probe = summary["anchor_probe"]["before (SFT)"]["prompt_masked"]["1"]
    assert 0.0 <= probe["p_eos"] <= 1.0 and probe["positions"] > 0
    assert summary["machine"]["jax"] and summary["machine"]["jaxlib"] and summary["machine"]["cpu"]
    world = summary["world"]
    assert world["questions"]["forget"] == world["people"]["forget"] * run_facts_per_person(run)
    assert 0.0 <= world["forget_fact_chance"] < 0.5
    assert "forget fact recall" in out and "after MDU (tau=1)" in out and "p(EOS)" in out
    written = json.loads((folder / "summary.json").read_text())
    assert (folder / "before_after.png").is_file() and written["table"] == summary["table"]

    # A second run reuses the cached SFT models and their evaluations: run_demo's preparation
    # (prepare, whose timings the summary reports) trains nothing and returns the same numbers;
    # what follows it in run_demo, the unlearning run, runs afresh by design.
    with pytest.MonkeyPatch.context() as mp:
        refuse_network(mp)
        mp.setattr(pipeline, "train_run", refuse_training)
        again = prepare(run, progress=False)
    assert again.timings["sft_s"] == 0.0 and again.timings["sft_retain_twin_s"] == 0.0
    assert again.before["aggregates"] == aggs["before (SFT)"] and again.twin["aggregates"] == aggs["retain-only twin"]


def test_shipped_demo_configs_spell_out_the_embedded_default():
    """configs/demo.yaml is what the no-argument run does; the sweep config differs only in taus."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    default = load_demo_config(None, [])
    shipped = load_demo_config(os.path.join(root, "configs", "demo.yaml"), [])
    sweep = load_demo_config(os.path.join(root, "configs", "demo_tau_sweep.yaml"), [])

    def effective(run):
        demo = demo_config(run)
        return (demo, sft_stage(run, demo), unlearn_stage(run, demo), paraphrases(run, demo),
                dataclasses.asdict(run.eval), dataclasses.asdict(run.objective), row_length(run, demo),
                run.output_dir)

    assert effective(shipped) == effective(default)
    assert effective(sweep) == effective(default) and sweep.taus == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert default.taus is None and default.objective.method == "mdu" and default.objective.tau == 1.0


# The direction checks of the comparison's conclusions that held on both full-size worlds (3
# seeds each; README "Every method side by side"), on the reduced world: at lr 1e-3, MDU at tau 1
# forgets at least as many facts as at tau 0 (ME+GD) and truncates more forget answers (two words
# or fewer), and GA collapses the model. Measured (means over unlearning seeds 0, 1, 10 forget
# questions): in this test's settings MDU tau 1 / ME+GD / GA forget fact recall 0.10 / 0.25 / 0,
# short answers 0.25 / 0 / 1.0, retain fact recall 1.0 / 1.0 / 0; the same comparison from the
# command line (one device, XLA's default matmul precision: other float rounding) gave forget
# recall 0.15 / 0.20 / 0, short answers 0.20 / 0 / 1.0, retain 0.95 / 0.85 / 0. The recall margin
# is one or two questions: the direction, not its size, is what both worlds showed.
GA_MAX_RETAIN_RECALL = 0.1


@pytest.mark.slow
@pytest.mark.compute_bound
def test_reduced_comparison_keeps_the_directions_both_worlds_showed(reduced_demo, tmp_path):
    *_, folder = reduced_demo
    config = load_yaml(os.path.join(ROOT, "configs", "demo_compare.yaml"))
    # The demo size's own paraphrase rule (none at CI size), as the demo above ran: the comparison
    # then reuses its SFT model and twin.
    config["demo"].pop("paraphrases")
    config["compare"].update(methods=[{"name": "MDU tau=1", "method": "mdu", "tau": 1.0},
                                      {"name": "ME+GD", "method": "me_gd"}, {"name": "GA", "method": "ga"}],
                             lrs=[1e-3], steps=[50], seeds=[0, 1], utility_fraction=0.0)
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as mp:
        refuse_network(mp)
        summary = compare.run_compare(compare.load_compare_config(str(path), REDUCED + [f"output_dir={folder}"]),
                                      progress=False)
    rows = {r["name"]: {k: mean for k, (mean, _sd) in r["summary"].items()} for r in summary["rows"]}
    mdu, tau0, ga = rows["MDU tau=1"], rows["ME+GD"], rows["GA"]
    print({name: (round(r["forget_fact_recall"], 3), round(r["forget_short_rate"], 3),
                  round(r["retain_fact_recall"], 3)) for name, r in rows.items()})
    # The comparison reused the demo's SFT model and twin (no second fine-tuning).
    assert summary["before"] == json.loads((folder / "summary.json").read_text())["aggregates"]["before (SFT)"]
    assert mdu["forget_fact_recall"] <= tau0["forget_fact_recall"]
    assert mdu["forget_short_rate"] > tau0["forget_short_rate"]
    assert ga["retain_fact_recall"] <= GA_MAX_RETAIN_RECALL
