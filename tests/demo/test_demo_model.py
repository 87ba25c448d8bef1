"""The demo's starting model folder: real HF layout, loads back identically, finite logits."""

import json

import jax
import numpy as np
import pytest

import mdu_jax as mj
from mdu_jax.demo.assets import DemoConfig, prepare_demo
from mdu_jax.demo.model import write_demo_model
from mdu_jax.demo.tokenizer import build_tokenizer
from mdu_jax.demo.world import build_world, demo_pairs, demo_texts
from mdu_jax.models.params import flatten_paths
from mdu_jax.checkpoints.safetensors_io import CheckpointReader
from mdu_jax.data.tokenizer import load_tokenizer
from tests.fixtures import tensor_names_and_shapes

TINY = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48)


@pytest.fixture(scope="module")
def world():
    return build_world(seed=2, num_people=10, facts_per_person=4, num_famous=4)


@pytest.fixture(scope="module", params=["llada", "dream"])
def model_dir(request, world, tmp_path_factory):
    family = request.param
    root = tmp_path_factory.mktemp(f"model-{family}")
    info = build_tokenizer(demo_texts(world), root / "tok", family, vocab_size=300)
    cfg = write_demo_model(root / "model", root / "tok", family=family, seed=5, **TINY)
    return family, info, cfg, root / "model"


def test_folder_has_the_real_checkpoint_layout(model_dir):
    family, info, cfg, folder = model_dir
    hf = json.loads((folder / "config.json").read_text())
    assert hf["model_type"] == {"llada": "llada", "dream": "Dream"}[family]
    # The tensor names and shapes an independent description of the HF layout expects.
    expected = dict(tensor_names_and_shapes(hf))
    reader = CheckpointReader(folder)
    assert {n: reader.shape(n) for n in reader.names()} == expected
    assert all(reader.dtype(n) == "F32" for n in reader.names())
    assert (folder / "tokenizer.json").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_vocab_and_special_ids_come_from_the_tokenizer(model_dir):
    family, info, cfg, folder = model_dir
    assert cfg.vocab_size % 8 == 0 and info.vocab_size <= cfg.vocab_size < info.vocab_size + 8
    assert (cfg.mask_token_id, cfg.eos_token_id, cfg.pad_token_id) == (
        info.mask_token_id, info.eos_token_id, info.pad_token_id)
    assert cfg.bos_token_id == (info.bos_token_id if family == "llada" else info.eos_token_id)
    assert (cfg.hidden_size, cfg.num_layers, cfg.intermediate_size) == (32, 2, 48)
    assert cfg.qkv_bias == (family == "dream")


def test_load_pretrained_gives_back_the_config_and_the_initial_params(model_dir):
    family, info, cfg, folder = model_dir
    cfg2, params, tok = mj.load_pretrained(folder)
    assert cfg2 == cfg
    want = flatten_paths(mj.init_params(cfg, jax.random.key(5)))
    got = flatten_paths(params)
    assert set(got) == set(want)
    for path in want:
        np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(want[path]), err_msg=str(path))
    assert tok is not None and tok.mask_token_id == cfg.mask_token_id


def test_load_tokenizer_finds_the_mask_token_with_the_configs_id(model_dir):
    family, info, cfg, folder = model_dir
    tok = load_tokenizer(folder, cfg)
    assert tok.mask_token == {"llada": "<|mdm_mask|>", "dream": "<|mask|>"}[family]
    assert tok.mask_token_id == cfg.mask_token_id == info.mask_token_id
    assert tok.pad_token_id == cfg.pad_token_id


def test_forward_on_a_chat_batch_gives_finite_logits(model_dir, world):
    family, info, cfg, folder = model_dir
    cfg, params, tok = mj.load_pretrained(folder)
    rows = demo_pairs(world, "forget")[:3]
    texts = [tok.apply_chat_template([{"role": "user", "content": r["question"]},
                                      {"role": "assistant", "content": r["answer"]}], tokenize=False) for r in rows]
    enc = tok(texts, padding=True, add_special_tokens=False, return_tensors="np")
    ids = np.where(enc["attention_mask"] == 1, enc["input_ids"], cfg.pad_token_id)
    ids[:, -2] = cfg.mask_token_id
    logits = mj.forward(cfg, params, ids, attention_mask=enc["attention_mask"])
    assert logits.shape == (*ids.shape, cfg.vocab_size)
    assert bool(np.isfinite(np.asarray(logits, np.float32)).all())


def test_existing_folder_is_replaced_whole(world, tmp_path):
    build_tokenizer(demo_texts(world), tmp_path / "tok", "llada", vocab_size=300)
    write_demo_model(tmp_path / "m", tmp_path / "tok", seed=0, **TINY)
    (tmp_path / "m" / "stale.txt").write_text("x")
    write_demo_model(tmp_path / "m", tmp_path / "tok", seed=1, **TINY)
    assert not (tmp_path / "m" / "stale.txt").exists()
    _, params, _ = mj.load_pretrained(tmp_path / "m", tokenizer=False)
    cfg = mj.ModelConfig.from_hf(tmp_path / "m")
    np.testing.assert_array_equal(np.asarray(params["embed"]["embedding"]),
                                  np.asarray(mj.init_params(cfg, jax.random.key(1))["embed"]["embedding"]))


def test_prepare_demo_writes_data_tokenizer_and_model(tmp_path):
    cfg = DemoConfig.ci(num_people=10, facts_per_person=3, hidden_size=32, intermediate_size=48)
    assets = prepare_demo(cfg, tmp_path)
    names = assets.split_names
    assert (tmp_path / "data" / f"{names['forget']}_perturbed.json").is_file()
    assert json.loads((tmp_path / "data" / f"{names['forget']}.json").read_text()) == demo_pairs(assets.world, "forget")
    assert assets.model_config == mj.ModelConfig.from_hf(assets.model_dir)
    assert assets.model_config.mask_token_id == assets.tokenizer.mask_token_id
    assert cfg.fingerprint() == DemoConfig.ci(num_people=10, facts_per_person=3, hidden_size=32,
                                              intermediate_size=48).fingerprint()
    assert cfg.fingerprint() != cfg.replace(seed=1).fingerprint()
