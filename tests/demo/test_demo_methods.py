"""Every unlearning method on the demo world from the command line: config, data plumbing, a run."""

import dataclasses
import json

import numpy as np
import pytest

from mdu_jax.training.config import METHODS
from mdu_jax.demo import pipeline
from mdu_jax.demo.assets import DemoConfig, prepare_demo
from mdu_jax.demo.stages import unlearning_rows
from mdu_jax.demo.world import build_world, demo_pairs
from mdu_jax.typed_config import ConfigKeyError


@pytest.mark.parametrize("method", METHODS)
def test_every_method_is_selectable_on_the_demo_config(method):
    run = pipeline.load_demo_config(None, [f"objective.method={method}", "objective.npo_beta=0.2"])
    assert run.objective.method == method and run.objective.npo_beta == 0.2
    assert pipeline.run_label(run.objective).startswith("after ")


def test_a_bad_method_name_is_an_error_naming_the_allowed_ones(capsys):
    with pytest.raises(ConfigKeyError, match=r"objective.method: unknown 'gradient_ascent'.*'mdu'.*'simnpo'"):
        pipeline.load_demo_config(None, ["objective.method=gradient_ascent"])
    # From the command line: a message on stderr, exit code 2, nothing run.
    assert pipeline.main(["objective.method=nope", "output_dir=/nonexistent/never-written"]) == 2
    err = capsys.readouterr().err
    assert "objective.method: unknown 'nope'" in err and all(m in err for m in METHODS)


def test_the_tau_sweep_is_for_mdu_only():
    with pytest.raises(ConfigKeyError, match="taus: the tau sweep runs MDU"):
        pipeline.load_demo_config(None, ["objective.method=npo", "taus=[0,1]"])
    with pytest.raises(ConfigKeyError, match="unknown config key 'mdu'.*'objective'.*'unlearn'"):
        pipeline.load_demo_config(None, ["mdu.tau=0.5"])  # the old section is gone: unknown key


def test_unlearning_rows_per_method():
    w = build_world(seed=1, num_people=12, facts_per_person=4, forget_fraction=0.25, holdout_fraction=0.1,
                    num_famous=4)
    forget, keep = demo_pairs(w, "forget"), demo_pairs(w, "retain") + demo_pairs(w, "background")
    assert unlearning_rows(w, "mdu") == (forget, keep)
    assert unlearning_rows(w, "npo") == (forget, keep)
    assert unlearning_rows(w, "ga") == (forget, [])       # pure gradient ascent: no retain term
    assert unlearning_rows(w, "dpo") == (forget, [])
    assert unlearning_rows(w, "sft") == (keep, [])        # the control: fine-tune on the retain rows only


@pytest.mark.parametrize("method", ["sft", "ga", "idkpo"])
def test_unlearning_stage_runs_each_kind_of_data_plumbing(method, tmp_path):
    """Two steps of the unlearning stage from a tiny random model: the method's rows, retain term
    and "I don't know" file reach the training stack (MDU runs in the end-to-end demo test)."""
    demo = DemoConfig.ci(num_people=8, hidden_size=32, num_layers=1, intermediate_size=48)
    assets = prepare_demo(demo, tmp_path / "assets")
    # GA trains on the 10 forget rows alone: a batch larger than that becomes one of every row.
    batch = 64 if method == "ga" else 4
    run = pipeline.load_demo_config(None, [f"objective.method={method}", "unlearn.steps=2",
                                           f"unlearn.batch_size={batch}", "max_length=40"])
    final = pipeline._unlearn(run, assets, assets.model_dir, str(tmp_path / method), str(tmp_path), progress=False)
    cfg_yaml = (tmp_path / method / "config.yaml").read_text()
    assert f"method: {method}" in cfg_yaml
    assert f"batch_size: {10 if method == 'ga' else 4}" in cfg_yaml
    rows = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)
    assert ("retain" in rows[-1]) == (method in ("sft", "idkpo"))
    assert (tmp_path / method / "final" / "model.safetensors").is_file() and final.endswith("final")
