"""The probes' time estimate (bench/probes_time.py): the call counts follow the CLI's settings,
a call's time is the larger of its two roofline bounds, and the per-call costs read off the
compiled programs are whole (every layer and every attention block counted, extrapolated exactly
from 1 and 2 layers), with the sampler's loop counted as one denoising step."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import pytest

import bench.probes_memory as pm
import bench.probes_time as pt
from mdu_jax.evaluate import build_parser
from mdu_jax.experiments import probe_command
from mdu_jax.experiments.probe_targets import ProbeTargets
from mdu_jax.models.params import abstract_params
from mdu_jax.sampling import make_spec
from mdu_jax.training import memory

# A small model in LLaDA's HF layout (4 layers) for the compiled-cost checks.
HF = {"model_type": "llada", "vocab_size": 512, "embedding_size": 512, "d_model": 64, "n_layers": 4,
      "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 128, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
      "weight_tying": False, "include_bias": False, "include_qkv_bias": False, "mask_token_id": 511,
      "eos_token_id": 1, "pad_token_id": 1, "max_sequence_length": 512}
ROWS, SEQ = 2, 160  # the sampler canvas holds 128 generated slots


@pytest.fixture(scope="module")
def hf_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe_time") / "config.json"
    path.write_text(json.dumps(HF))
    return str(path)


@pytest.fixture(scope="module")
def model_cfg(hf_config):
    return memory.model_config(pm.relearn_train_config(), hf_config)


def test_roofline_is_the_larger_of_the_two_bounds():
    assert pt.roofline_s(pt.Cost(flops=1e12, bytes=1e9), 1e12, 1e12) == pytest.approx(1.0)    # compute bound
    assert pt.roofline_s(pt.Cost(flops=1e9, bytes=3e12), 1e12, 1e12) == pytest.approx(3.0)    # memory bound
    costs = {"sampler step": pt.Cost(2e12, 1e9), "relearn step": pt.Cost(1e9, 4e12),
             "relearn step, FSDP 8": pt.Cost(1e9, 1e12)}
    calls = {"sampler step": 10, "relearn step": 3}
    assert pt.probe_seconds(calls, costs, 1e12, 1e12) == pytest.approx(10 * 2.0 + 3 * 4.0)
    assert pt.probe_seconds(calls, costs, 1e12, 1e12, "relearn step, FSDP 8") == pytest.approx(10 * 2.0 + 3 * 1.0)


def test_call_counts_follow_the_cli_settings(model_cfg):
    s = pt.cli_settings(model_cfg)
    # The bench's settings are the ones `python -m mdu_jax.evaluate --probes all` builds for this family.
    args = build_parser().parse_args(["--probes", "all", "--model", "unused"])
    assert s == probe_command._settings(args, ProbeTargets(models={"unlearned": "unused"}), model_cfg)
    steps = len(make_spec(model_cfg, gen_length=s.sampler.gen_length, steps=s.sampler.steps,
                          block_length=s.sampler.block_length).plan)
    assert (s.sampler.gen_length, steps, s.batch_size, s.mc_samples) == (128, 128, 32, 32)
    calls = pt.invocations(s, steps)
    # 400 forget questions and their 400 paraphrases x 8 samples in batches of 32, 128 steps each.
    assert calls["generation"] == {"sampler step": 2 * 100 * 128}
    # 400 answers x 4 reveal ratios x 1 order, 32 rows per forward.
    assert calls["infilling"] == {"infilling forward": 50}
    # float, int8, int4 x (forget + retain, 400 rows each): 13 greedy batches and 400 likelihood
    # forwards (400 x 32 Monte Carlo rows, 32 per forward) per split.
    assert calls["quantization"] == {"quantise": 2, "sampler step": 3 * 2 * 13 * 128, "likelihood": 3 * 2 * 400}
    # 200 held out (before, after) and 200 fine-tuned on (after); 10 SFT steps.
    assert calls["relearn"] == {"sampler step": 3 * 7 * 128, "likelihood": 3 * 200, "relearn step": 10}
    fewer = pt.invocations(dataclasses.replace(s, leak_samples=4, bits=("int8",), orders=("random", "prefix"),
                                               relearn_steps=(5, 20)), steps)
    assert fewer["generation"] == {"sampler step": 2 * 50 * 128}
    off = build_parser().parse_args(["--probes", "all", "--model", "unused", "--no-leak-paraphrased"])
    s_off = probe_command._settings(off, ProbeTargets(models={"unlearned": "unused"}), model_cfg)
    assert s_off == dataclasses.replace(s, leak_paraphrased=False)
    assert pt.invocations(s_off, steps)["generation"] == {"sampler step": 100 * 128}
    assert fewer["quantization"] == {"quantise": 1, "sampler step": 2 * 2 * 13 * 128, "likelihood": 2 * 2 * 400}
    assert fewer["infilling"] == {"infilling forward": 100}
    assert fewer["relearn"]["relearn step"] == 25
    assert set(pt.invocations(dataclasses.replace(s, probes=("infilling",)), steps)) == {"infilling"}


def _direct(model_cfg, layers, name, scan):
    cfg = model_cfg.replace(num_layers=layers, scan_layers=scan)
    run_cfg = cfg.replace(attention_impl="xla")
    fn, args = {n: (f, a) for n, f, a in pm.eval_programs(cfg, run_cfg, abstract_params(cfg), ROWS, SEQ)}[name]
    return pt._cost(fn.lower(*args).compile())


def test_compiled_costs_count_every_layer_and_one_sampler_step(hf_config, model_cfg):
    costs, layers = pt.program_costs(ROWS, SEQ, 4, 64, devices=[1], hf_config=hf_config)
    assert layers == 4 and set(costs) == set(pt.PROGRAMS)
    direct = _direct(model_cfg, 4, "infilling forward", scan=False)
    # Extrapolating from 1 and 2 layers gives what compiling all 4 counts (flops exactly; bytes are
    # XLA:CPU's fusion, linear in the layers up to a few buffers: 1%).
    assert costs["infilling forward"].flops == direct.flops
    assert costs["infilling forward"].bytes == pytest.approx(direct.bytes, rel=0.01)
    # Why the costs are compiled without the layer scan: XLA counts a loop body once.
    assert _direct(model_cfg, 4, "infilling forward", scan=True).flops < 0.5 * direct.flops
    # The forward's matmuls: 2 x tokens x (4 layers' q, k, v, o, MLP weights + the LM head), plus
    # attention's scores and mixing, 4 x rows x seq^2 x width per layer; norms, softmax and the
    # rest add under 20% at this width.
    d, f, v = HF["d_model"], HF["mlp_hidden_size"], HF["vocab_size"]
    matmuls = 2 * ROWS * SEQ * (4 * (4 * d * d + 3 * d * f) + d * v) + 4 * 4 * ROWS * SEQ * SEQ * d
    assert matmuls < costs["infilling forward"].flops < 1.2 * matmuls
    # The sampler program is a fori_loop over denoising steps: its cost is one step, whatever the count.
    spec_args = dict(gen_length=128, block_length=32, temperature=1.0)
    cfg = model_cfg.replace(num_layers=1, scan_layers=False, attention_impl="xla")
    _, fn, args = pm.eval_programs(cfg, cfg, abstract_params(cfg), ROWS, SEQ)[2]
    few = pt._cost(fn.lower(args[0], make_spec(cfg, steps=32, **spec_args), *args[2:]).compile())
    many = pt._cost(fn.lower(args[0], make_spec(cfg, steps=128, **spec_args), *args[2:]).compile())
    assert few.flops == many.flops
