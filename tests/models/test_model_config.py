"""ModelConfig.from_hf reads the real full-size configs and rejects bad ones by name."""

import json
import pathlib

import jax
import numpy as np
import pytest

import mdu_jax as mj
from mdu_jax.models.params import count_params

DATA = pathlib.Path(__file__).parent / "data"
LLADA_8B = DATA / "llada_8b_instruct_config.json"
DREAM_7B = DATA / "dream_v0_instruct_7b_config.json"


def test_llada_8b_config_and_parameter_count():
    cfg = mj.ModelConfig.from_hf(LLADA_8B)
    assert (cfg.family, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads) == ("llada", 4096, 32, 32, 32)
    assert (cfg.head_dim, cfg.intermediate_size, cfg.vocab_size) == (128, 12288, 126464)
    assert (cfg.mask_token_id, cfg.eos_token_id, cfg.pad_token_id) == (126336, 126081, 126081)
    assert cfg.rope_theta == 500000.0 and cfg.rms_norm_eps == 1e-5 and not cfg.tie_word_embeddings
    assert not cfg.qkv_bias and cfg.rope_in_fp32 and not cfg.shifts_logits
    # 8,015,581,184 = the safetensors index total_size / 2 bytes of the released bf16 checkpoint.
    assert cfg.num_params() == 8_015_581_184


def test_dream_7b_config_and_parameter_count():
    cfg = mj.ModelConfig.from_hf(DREAM_7B)
    assert (cfg.family, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads) == ("dream", 3584, 28, 28, 4)
    assert (cfg.intermediate_size, cfg.vocab_size, cfg.mask_token_id) == (18944, 152064, 151666)
    assert cfg.qkv_bias and cfg.shifts_logits and not cfg.rope_in_fp32
    # Qwen2.5-7B, from which Dream-7B is initialised: 7,615,616,512 parameters.
    assert cfg.num_params() == 7_615_616_512


@pytest.mark.parametrize("path", [LLADA_8B, DREAM_7B])
def test_eval_shape_at_full_size_allocates_nothing(path):
    cfg = mj.ModelConfig.from_hf(path, param_dtype="bfloat16")
    shapes = jax.eval_shape(lambda k: mj.init_params(cfg, k), jax.random.key(0))
    assert count_params(shapes) == cfg.num_params()
    assert all(x.dtype == np.dtype("bfloat16") for x in jax.tree.leaves(shapes))
    assert shapes["layers"]["q"]["kernel"].shape == (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.head_dim)


def test_hf_table_matches_param_count():
    for path in (LLADA_8B, DREAM_7B):
        cfg = mj.ModelConfig.from_hf(path)
        total = sum(int(np.prod(t.shape)) for t in mj.models.hf_tensors(cfg))
        assert total == cfg.num_params()


def test_to_hf_round_trips():
    for path in (LLADA_8B, DREAM_7B):
        cfg = mj.ModelConfig.from_hf(path)
        assert mj.ModelConfig.from_hf(cfg.to_hf()) == cfg


def _load(path):
    return json.loads(pathlib.Path(path).read_text())


def test_unknown_model_type_is_named(tmp_path):
    data = _load(LLADA_8B)
    data["model_type"] = "mistral"
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(mj.ConfigError, match=r"config.json: model_type: unknown 'mistral'"):
        mj.ModelConfig.from_hf(tmp_path)


@pytest.mark.parametrize("path,field", [(LLADA_8B, "d_model"), (LLADA_8B, "weight_tying"),
                                        (LLADA_8B, "mask_token_id"), (DREAM_7B, "num_hidden_layers"),
                                        (DREAM_7B, "mask_token_id"), (DREAM_7B, "rms_norm_eps")])
def test_missing_field_is_named(tmp_path, path, field):
    data = _load(path)
    del data[field]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(mj.ConfigError, match=rf"config.json: missing config field '{field}'"):
        mj.ModelConfig.from_hf(tmp_path)


def test_inconsistent_heads_are_named():
    data = _load(DREAM_7B)
    data["num_key_value_heads"] = 5
    with pytest.raises(mj.ConfigError, match=r"num_kv_heads: 5 does not divide num_heads=28"):
        mj.ModelConfig.from_hf(data)
    data = _load(LLADA_8B)
    data["n_heads"] = 30
    with pytest.raises(mj.ConfigError, match=r"'n_heads': 30 does not divide d_model=4096"):
        mj.ModelConfig.from_hf(data)


def test_mask_id_out_of_vocab_is_named():
    data = _load(LLADA_8B)
    data["mask_token_id"] = 200000
    with pytest.raises(mj.ConfigError, match=r"mask_token_id: expected an id in \[0, vocab_size=126464\), got 200000"):
        mj.ModelConfig.from_hf(data)


def test_unsupported_architecture_switch_is_named():
    data = _load(LLADA_8B)
    data["alibi"] = True
    with pytest.raises(mj.ConfigError, match=r"'alibi': unsupported value True"):
        mj.ModelConfig.from_hf(data)


def test_wrong_type_and_unknown_dtype_are_named():
    data = _load(LLADA_8B)
    data["n_layers"] = "32"
    with pytest.raises(mj.ConfigError, match=r"'n_layers': expected int, got '32'"):
        mj.ModelConfig.from_hf(data)
    with pytest.raises(mj.ConfigError, match=r"dtype: unknown dtype 'float8'"):
        mj.ModelConfig.from_hf(LLADA_8B, dtype="float8")


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(mj.ConfigError, match=r"no such config file"):
        mj.ModelConfig.from_hf(tmp_path)
