"""The memory plan (bench/memory_plan.py, mdu_jax.training.memory) on a small config: its state sizes come
from the compiled program and match the formulas, and its temp memory goes down when remat and
the chunked loss are turned on."""

import json

import pytest

import bench.memory_plan as memory_plan
from mdu_jax.training import memory

# A small LLaDA-layout model whose vocabulary makes the logits a visible share of the step.
HF = {"model_type": "llada", "vocab_size": 2048, "embedding_size": 2048, "d_model": 64, "n_layers": 4,
      "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 128, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
      "weight_tying": False, "include_bias": False, "include_qkv_bias": False, "mask_token_id": 2047,
      "eos_token_id": 1, "pad_token_id": 1, "max_sequence_length": 512}
YAML = """
model: {path: unused, dtype: bfloat16, param_dtype: bfloat16, anchor_dtype: bfloat16,
        remat_policy: dots_no_batch, attention_impl: xla}
objective: {method: mdu, chunk_size: 16}
optim: {grad_accum: 2}
parallel: {mesh: {data: 1, fsdp: -1, tensor: 1}}
"""
ROWS, SEQ = 4, 128


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    (root / "tiny.yaml").write_text(YAML)
    (root / "config.json").write_text(json.dumps(HF))
    patch = pytest.MonkeyPatch()
    patch.setitem(memory_plan.MODELS, "tiny", (str(root / "tiny.yaml"), str(root / "config.json")))
    yield lambda setup, devices=1, overrides=(): memory_plan.plan("tiny", setup, devices, ROWS, SEQ, overrides)
    patch.undo()


@pytest.fixture(scope="module")
def rows(tiny_plan):
    out = {
        "neither": tiny_plan("no remat, no chunk"),
        "remat": tiny_plan("no remat, no chunk", overrides=["model.remat_policy=full"]),
        "chunk": tiny_plan("no remat, no chunk", overrides=["objective.chunk_size=16"]),
    }
    out["remat"].setup, out["chunk"].setup = "remat full", "chunk 16"
    return out


def test_remat_and_chunking_lower_the_compiled_temp_memory(rows):
    temp = {k: r.mem.temp for k, r in rows.items()}
    assert temp["remat"] < temp["neither"]
    assert temp["chunk"] < temp["neither"]
    assert rows["remat"].mem.peak < rows["neither"].mem.peak
    assert rows["chunk"].mem.peak < rows["neither"].mem.peak
    # The state does not depend on either option.
    assert len({(r.mem.params, r.mem.opt_state, r.mem.anchor) for r in rows.values()}) == 1


def test_state_sizes_come_from_the_program_and_match_the_formulas(rows):
    m, f = rows["chunk"].mem, rows["chunk"].formula
    n = 2 * (4 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 2 * 2048 * 64 + 64)  # bytes of the bf16 (f16 proxy) model
    assert m.params == n == f["params"]
    assert m.opt_state == pytest.approx(f["opt_state"], abs=64)  # + Adam/MultiSteps counters
    assert m.anchor == n == f["anchor"]
    # Every argument byte is accounted for by the four groups (state scalars: step, rng, counters).
    assert 0 <= m.argument - (m.params + m.opt_state + m.anchor + m.batch) < 256


def test_fsdp_divides_the_state_per_device(tiny_plan, rows):
    two = tiny_plan("no remat, no chunk", devices=2, overrides=["objective.chunk_size=16"])
    one = rows["chunk"].mem
    assert two.mem.devices == 2 and two.mem.rows == 2 * ROWS
    # Norm scales [D] do not split by the rules' choice (embed only); everything else halves.
    assert one.params / 2 <= two.mem.params < 0.51 * one.params
    assert one.anchor / 2 <= two.mem.anchor < 0.51 * one.anchor
    assert two.formula["params"] == pytest.approx(two.mem.params, rel=0.01)


def test_lora_plan_holds_one_copy_of_the_model(tiny_plan, rows):
    r = tiny_plan("LoRA r16 fused")
    full = rows["chunk"].mem
    assert r.mem.anchor == full.params      # the base weights, once, as the anchor
    assert r.mem.params == r.formula["params"] < full.params / 4
    assert 0 <= r.mem.argument - (r.mem.params + r.mem.opt_state + r.mem.anchor + r.mem.batch) < 256
    assert r.mem.peak < full.peak


def test_the_fit_table_reports_every_hardware_target(rows):
    table = memory_plan.fit_table(list(rows.values()), markdown=True)
    lines = table.splitlines()
    assert lines[0].startswith("| model | setup |") and all(h in lines[0] for h, _, _ in memory_plan.HARDWARE)
    body = [line for line in lines[2:] if "tiny" in line]
    assert len(body) == 3
    for line in body:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == f"{ROWS} x {SEQ}"
        assert cells[3].startswith("yes (")  # 1 device: the tiny model fits an H100
        assert cells[4:] == ["-"] * (len(memory_plan.HARDWARE) - 1)  # meshes not planned here


def test_cpu_proxy_swaps_only_bfloat16():
    from mdu_jax.training.config import load_config

    cfg = load_config(base={"model": {"path": "x", "dtype": "bf16", "param_dtype": "float32",
                                      "anchor_dtype": "bfloat16"}})
    proxy = memory.cpu_proxy(cfg)
    assert (proxy.model.dtype, proxy.model.param_dtype, proxy.model.anchor_dtype) == ("float16", "float32", "float16")
    assert cfg.model.dtype == "bf16"
