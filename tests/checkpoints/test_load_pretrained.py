"""load_pretrained reads real-layout HF folders and names what is wrong with bad ones."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import mdu_jax as mj
from tests.fixtures import write_hf_checkpoint


def test_sharded_checkpoint_loads_like_a_single_file(tmp_path):
    write_hf_checkpoint(tmp_path / "one", "dream", shards=1, seed=3, tokenizer=False)
    write_hf_checkpoint(tmp_path / "three", "dream", shards=3, seed=3, tokenizer=False)
    assert os.path.isfile(tmp_path / "three" / "model.safetensors.index.json")
    _, a, _ = mj.load_pretrained(tmp_path / "one")
    _, b, _ = mj.load_pretrained(tmp_path / "three")
    for x, y in zip(np.asarray(a["layers"]["q"]["bias"]), np.asarray(b["layers"]["q"]["bias"])):
        np.testing.assert_array_equal(x, y)


def test_weights_land_in_the_right_slots(tmp_path):
    _, sd = write_hf_checkpoint(tmp_path, "llada", tokenizer=False)
    cfg, params, _ = mj.load_pretrained(tmp_path)
    q1 = sd["model.transformer.blocks.1.q_proj.weight"].numpy()  # [H*h, D]
    np.testing.assert_array_equal(np.asarray(params["layers"]["q"]["kernel"][1]).reshape(cfg.hidden_size, -1), q1.T)
    gate0 = sd["model.transformer.blocks.0.ff_proj.weight"].numpy()  # ff_proj is the SiLU gate
    np.testing.assert_array_equal(np.asarray(params["layers"]["gate"]["kernel"][0]), gate0.T)
    down0 = sd["model.transformer.blocks.0.ff_out.weight"].numpy()  # block ff_out is the down proj
    np.testing.assert_array_equal(np.asarray(params["layers"]["down"]["kernel"][0]), down0.T)
    head = sd["model.transformer.ff_out.weight"].numpy()
    np.testing.assert_array_equal(np.asarray(params["lm_head"]["kernel"]), head.T)


def test_llada_tokenizer_gets_the_mdm_mask_token_and_fixed_template(tmp_path):
    write_hf_checkpoint(tmp_path, "llada")
    cfg, _, tok = mj.load_pretrained(tmp_path)
    assert tok.mask_token == "<|mdm_mask|>" and tok.mask_token_id == cfg.mask_token_id
    msgs = [{"role": "user", "content": "who wrote the book ?"}, {"role": "assistant", "content": "the author"}]
    full = tok.apply_chat_template(msgs, tokenize=False)
    assert full == ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nwho wrote the book ?<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\nthe author<|eot_id|>")
    prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert full.startswith(prompt) and prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def _rewrite(folder, sd):
    os.remove(folder / "model.safetensors")
    save_file(sd, str(folder / "model.safetensors"))


def test_missing_tensor_is_named(tmp_path):
    _, sd = write_hf_checkpoint(tmp_path, "llada", tokenizer=False)
    del sd["model.transformer.blocks.1.up_proj.weight"]
    _rewrite(tmp_path, sd)
    with pytest.raises(mj.CheckpointError, match=r"missing tensor 'model.transformer.blocks.1.up_proj.weight'"):
        mj.load_pretrained(tmp_path)


def test_extra_tensor_is_named(tmp_path):
    _, sd = write_hf_checkpoint(tmp_path, "llada", tokenizer=False)
    sd["model.transformer.blocks.0.rotary_emb.inv_freq"] = torch.ones(4)
    _rewrite(tmp_path, sd)
    with pytest.raises(mj.CheckpointError,
                       match=r"model.safetensors: unexpected tensor 'model.transformer.blocks.0.rotary_emb.inv_freq'"):
        mj.load_pretrained(tmp_path)


def test_wrong_shape_is_named_with_expected_and_actual(tmp_path):
    _, sd = write_hf_checkpoint(tmp_path, "dream", tokenizer=False)
    sd["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(32, 32)  # 2 kv heads x 8 = 16 rows expected
    _rewrite(tmp_path, sd)
    with pytest.raises(mj.CheckpointError, match=r"model.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight' "
                                                 r"has shape \[32, 32\], expected \[16, 32\]"):
        mj.load_pretrained(tmp_path)


def test_index_naming_a_missing_shard_is_named(tmp_path):
    write_hf_checkpoint(tmp_path, "llada", shards=3, tokenizer=False)
    os.remove(tmp_path / "model-00002-of-00003.safetensors")
    with pytest.raises(mj.CheckpointError, match=r"names shard 'model-00002-of-00003.safetensors', which does not exist"):
        mj.load_pretrained(tmp_path)


def test_folder_without_weights_or_config_is_named(tmp_path):
    with pytest.raises(mj.CheckpointError, match=r"no such checkpoint folder"):
        mj.load_pretrained(tmp_path / "nope")
    with pytest.raises(mj.CheckpointError, match=r"neither an HF checkpoint \(no config.json\)"):
        mj.load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llada"}))
    with pytest.raises(mj.ConfigError, match=r"missing config field 'd_model'"):
        mj.load_pretrained(tmp_path)
