"""generate takes prompts in every form users naturally have (issue 16 item 4): a string, a list of
strings, one token-id list or several, 1-D / 2-D numpy or jax arrays, and the BatchEncoding that
transformers' tokenizers and ``apply_chat_template(..., return_dict=True)`` return; anything else
is a TypeError that names what was given."""

import jax.numpy as jnp
import numpy as np
import pytest
from transformers import AutoTokenizer, BatchEncoding

from mdu_jax.sampling import generate
from mdu_jax.sampling.prompts import encode_prompts
from tests.fixtures import write_tokenizer
from tests.sampling.tiny import tiny_model

KW = dict(gen_length=8, steps=8, block_length=4)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    cfg, _ = tiny_model("llada")
    folder = tmp_path_factory.mktemp("tok")
    write_tokenizer(str(folder), "llada", cfg.vocab_size, cfg.mask_token_id)
    return AutoTokenizer.from_pretrained(folder)


def test_every_prompt_form_gives_the_tokens_of_its_id_lists(tokenizer):
    cfg, params = tiny_model("llada")
    texts = ["who wrote the book ?", "the author was born in paris"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    reference = generate(cfg, params, ids, **KW).tokens
    padded = tokenizer(texts, add_special_tokens=False, padding=True)  # a BatchEncoding, right-padded
    assert isinstance(padded, BatchEncoding) and len(set(map(len, ids))) == 2  # padding really happens
    same_length = [ids[0], ids[0]]
    forms = {
        "list of strings": (texts, reference),
        "BatchEncoding with padding": (padded, reference),
        "dict with input_ids": ({"input_ids": ids}, reference),
        "one string": (texts[0], reference[:1]),
        "one id list": (ids[0], reference[:1]),
        "1-D numpy": (np.asarray(ids[0]), reference[:1]),
        "1-D jax": (jnp.asarray(ids[0]), reference[:1]),
        "2-D numpy": (np.asarray(same_length), reference[[0, 0]]),
        "2-D jax": (jnp.asarray(same_length), reference[[0, 0]]),
    }
    for name, (prompts, want) in forms.items():
        got = generate(cfg, params, prompts, tokenizer=tokenizer, **KW)
        np.testing.assert_array_equal(got.tokens, want, err_msg=name)
        assert len(got.texts) == len(want), name


def test_the_chat_template_encoding_is_one_prompt(tokenizer):
    cfg, params = tiny_model("llada")
    # Words of the tiny vocabulary only (its 64 ids leave no room for an <unk>).
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] + ' ' + m['content'] + ' ' }}{% endfor %}"
                               "{% if add_generation_prompt %}{{ 'assistant' }}{% endif %}")
    enc = tokenizer.apply_chat_template([{"role": "user", "content": "who wrote the book ?"}],
                                        add_generation_prompt=True, return_dict=True)
    assert isinstance(enc, BatchEncoding)
    ids = list(enc["input_ids"])
    np.testing.assert_array_equal(generate(cfg, params, enc, **KW).tokens, generate(cfg, params, [ids], **KW).tokens)


def test_left_padding_is_removed_by_the_attention_mask():
    enc = BatchEncoding({"input_ids": [[1, 1, 5, 6], [7, 8, 9, 10]], "attention_mask": [[0, 0, 1, 1], [1, 1, 1, 1]]})
    assert encode_prompts(enc) == [[5, 6], [7, 8, 9, 10]]


@pytest.mark.parametrize("bad,match", [
    (3.5, "got float"),
    (None, "got NoneType"),
    (np.zeros((2, 2, 2), np.int32), r"1-D \(one prompt\) or 2-D"),
    (np.array([1.5, 2.0]), "integer token ids"),
    ([[1, 2], 3], "a single id among lists"),
    ({"ids": [1, 2]}, "must hold 'input_ids'"),
    (BatchEncoding({"input_ids": [[1, 2]], "attention_mask": [[1]]}), "1 entries for 2 token ids"),
], ids=["float", "None", "3-D", "float ids", "mixed", "no input_ids", "mask length"])
def test_other_inputs_are_errors_naming_them(bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        encode_prompts(bad)
