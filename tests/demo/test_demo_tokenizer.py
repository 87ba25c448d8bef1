"""The demo tokenizer: exact round trips, special ids, chat template, loading conventions."""

import json

import pytest
from transformers import AutoTokenizer

from mdu_jax.data.encoding import encode_pair
from mdu_jax.demo.tokenizer import FAMILIES, build_tokenizer
from mdu_jax.demo.world import build_world, demo_pairs, demo_texts
from mdu_jax.data.tokenizer import LLADA_CHAT_TEMPLATE

WORLD = dict(seed=1, num_people=12, facts_per_person=5, num_famous=4)
LLADA_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<|mdm_mask|>"]


@pytest.fixture(scope="module")
def world():
    return build_world(**WORLD)


@pytest.fixture(scope="module", params=["llada", "dream"])
def built(request, world, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"tok-{request.param}")
    info = build_tokenizer(demo_texts(world), folder, request.param, vocab_size=384)
    return request.param, info, AutoTokenizer.from_pretrained(str(folder))


def test_every_generated_text_round_trips_exactly(built, world):
    _, _, tok = built
    texts = demo_texts(world) + ["Two  spaces,\nnew line\n\nand a trailing space ", " leading space"]
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, t
        assert tok.decode(ids) == t


def test_no_special_token_is_added_by_plain_encoding(built):
    _, info, tok = built
    ids = tok("Where was it?")["input_ids"]
    assert not set(ids) & set(info.special_ids.values())


def test_rendered_conversation_round_trips_and_the_answer_decodes_without_specials(built, world):
    family, info, tok = built
    row = demo_pairs(world, "forget")[0]
    ids, prompt_len = encode_pair(tok, row["question"], row["answer"])  # the training code's path
    messages = [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
    assert tok.decode(ids) == tok.apply_chat_template(messages, tokenize=False)
    response = ids[prompt_len:]
    assert info.eot_token_id in response
    assert tok.decode(response, skip_special_tokens=True).strip() == row["answer"]
    if family == "llada":
        assert ids[0] == info.bos_token_id
        assert response[-1] == info.eot_token_id


def test_special_token_ids_and_roles(built):
    family, info, tok = built
    fam = FAMILIES[family]
    for token, i in info.special_ids.items():
        assert tok.convert_tokens_to_ids(token) == i
        assert tok.convert_ids_to_tokens(i) == token
    assert len(set(info.special_ids.values())) == len(info.special_ids)
    assert (tok.eos_token_id, tok.pad_token_id, tok.mask_token_id) == (
        info.eos_token_id, info.pad_token_id, info.mask_token_id)
    assert info.mask_token_id not in (info.pad_token_id, info.eos_token_id)
    assert tok.mask_token == fam.mask and tok.eos_token == fam.eos == tok.pad_token
    assert info.vocab_size == len(tok) <= 384
    if family == "llada":
        assert list(info.special_ids)[:6] == LLADA_SPECIALS
        assert tok.bos_token == "<|startoftext|>" and info.bos_token_id == tok.bos_token_id
        assert tok.convert_ids_to_tokens(info.eot_token_id) == "<|eot_id|>"
    else:
        assert info.bos_token_id is None
        assert tok.convert_ids_to_tokens(info.eot_token_id) == "<|im_end|>"
    # Each special is one token even inside text.
    for token in info.special_ids:
        assert tok(f"a{token}b", add_special_tokens=False)["input_ids"][1] == info.special_ids[token]


def test_llada_folder_carries_dllms_chat_template(tmp_path, world):
    build_tokenizer(demo_texts(world), tmp_path, "llada", vocab_size=384)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert tok.chat_template == LLADA_CHAT_TEMPLATE
    prompt = tok.apply_chat_template([{"role": "user", "content": "Q"}], tokenize=False, add_generation_prompt=True)
    assert prompt == ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n")
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["mask_token"] == "<|mdm_mask|>" and config["padding_side"] == "right"


def test_generated_words_become_compact_tokens(built, world):
    _, _, tok = built
    # Names, towns and template words are fitted, so an answer takes far fewer tokens than characters.
    answers = [r["answer"] for r in demo_pairs(world, "full")]
    n_tokens = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers)
    n_chars = sum(len(a) for a in answers)
    assert n_tokens < n_chars / 3


def test_training_is_deterministic(tmp_path, world):
    build_tokenizer(demo_texts(world), tmp_path / "a", "llada", vocab_size=384)
    build_tokenizer(demo_texts(world), tmp_path / "b", "llada", vocab_size=384)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()


def test_bad_family_and_tiny_vocab_are_refused(tmp_path):
    with pytest.raises(ValueError, match="family"):
        build_tokenizer(["a b"], tmp_path, "gpt")
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer(["a b"], tmp_path, "llada", vocab_size=50)


def test_default_vocab_makes_every_generated_word_one_token(tmp_path):
    world = build_world(seed=0)
    info = build_tokenizer(demo_texts(world), tmp_path, "llada")
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert info.vocab_size <= 1024
    words = {w for p in world.people for w in p.name.split()}
    words |= {f.value for p in world.people for f in p.facts if f.kind in ("birthplace", "home", "sister")}
    for w in sorted(words):
        assert len(tok.tokenize(" " + w)) == 1, (w, tok.tokenize(" " + w))
