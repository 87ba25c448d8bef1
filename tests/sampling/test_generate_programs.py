"""generate: one compiled program per bucket, batching-invariant random streams, text output,
and errors that name the wrong argument."""

import contextlib

import jax
import numpy as np
import pytest

from mdu_jax.sampling import compiled_programs, denoise, generate
from mdu_jax.sampling.prompts import bucket_length, decode, encode_prompts, trim_at_stop
from tests.sampling.tiny import EOS, tiny_model

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles():
    """Counts XLA backend compilations (of anything) inside the block."""
    events = []

    def listener(event, duration, **kwargs):
        if event == BACKEND_COMPILE_EVENT:
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_second_batch_of_the_same_bucket_does_not_recompile():
    cfg, params = tiny_model("llada")
    kw = dict(gen_length=8, steps=8, block_length=4)
    first = generate(cfg, params, [[5, 6, 7], [8, 9, 10, 11, 12]], **kw)
    programs, cache = compiled_programs(), denoise._cache_size()
    with count_compiles() as compiles:
        # Other prompts, other lengths and a batch of 2 -> 2 rows again: the same canvas bucket
        # (prompt + 8 slots <= 16), and both segments (blocks) of the plan run the one program.
        second = generate(cfg, params, [[20, 21, 22, 23, 24, 25, 26], [30]], **kw)
    assert compiles == [] and compiled_programs() == programs and denoise._cache_size() == cache
    assert first.tokens.shape == second.tokens.shape == (2, 8)
    # A prompt beyond the bucket needs a new program: the counters do see compilations.
    assert bucket_length(17 + 8) > bucket_length(7 + 8)
    with count_compiles() as compiles:
        generate(cfg, params, [list(range(2, 19)), list(range(30, 40))], **kw)  # canvases 25, 18 -> 32
    assert len(compiles) >= 1 and compiled_programs() == programs + 1 and denoise._cache_size() == cache + 1


def test_sampled_outputs_depend_on_seed_and_prompt_index_not_on_batching():
    # The parity tests show each row of a padded batch equals its prompt alone, draws included;
    # here the same prompts split into other batches (other rows, other buckets) agree too.
    cfg, params = tiny_model("llada")
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [20, 21, 22, 23, 24]]
    kw = dict(gen_length=12, steps=12, block_length=4, algorithm="random", temperature=0.7)
    together = generate(cfg, params, prompts, seed=11, **kw).tokens
    in_pairs = generate(cfg, params, prompts, seed=11, batch_size=2, **kw).tokens
    np.testing.assert_array_equal(together, in_pairs)
    other_seed = generate(cfg, params, prompts, seed=12, **kw).tokens
    assert not np.array_equal(together, other_seed)


def test_prompts_may_be_id_lists_arrays_or_a_2d_array():
    assert encode_prompts([[5, 6], np.array([7])]) == [[5, 6], [7]]
    assert encode_prompts(np.array([[5, 6], [7, 8]])) == [[5, 6], [7, 8]]
    with pytest.raises(ValueError, match="tokenizer"):
        encode_prompts(["who wrote"])
    with pytest.raises(ValueError, match="tokenizer"):  # one string is one prompt (tests/sampling/test_prompt_inputs.py)
        encode_prompts("who wrote")


def test_trim_at_stop_cuts_at_the_first_stop_token():
    assert trim_at_stop([4, 5, 1, 6, 1], [1]) == [4, 5]
    assert trim_at_stop([4, 5, 6], [1]) == [4, 5, 6]
    assert trim_at_stop([7, 4, 5], [9, 7]) == []


def test_texts_are_the_decoded_tokens_cut_at_eos(tmp_path):
    from tests.fixtures import write_tokenizer
    from transformers import AutoTokenizer

    cfg, params = tiny_model("llada")
    write_tokenizer(tmp_path, "llada", cfg.vocab_size, cfg.mask_token_id)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    text_prompts = ["who wrote the book ?", "the author was born in"]
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in text_prompts]
    kw = dict(gen_length=8, steps=8, block_length=4)
    from_text = generate(cfg, params, text_prompts, tokenizer=tok, **kw)
    from_ids = generate(cfg, params, ids, **kw)
    np.testing.assert_array_equal(from_text.tokens, from_ids.tokens)
    assert from_ids.texts is None
    for row, text in zip(from_text.tokens, from_text.texts):
        row = list(row)
        kept = row[:row.index(EOS)] if EOS in row else row
        assert text == tok.decode(kept, skip_special_tokens=True)
    assert decode(tok, np.array([[tok.convert_tokens_to_ids("who"), EOS, tok.convert_tokens_to_ids("book")]]),
                  [EOS]) == ["who"]


@pytest.mark.parametrize("family,prompts,kw,match", [
    ("llada", [[5, 63]], {}, "mask token"),
    ("llada", [[5, 99]], {}, "outside"),
    ("dream", [[]], {}, "empty"),
    ("dream", [[5]], dict(block_length=4), "block_length"),
    ("dream", [[5]], dict(algorithm="low_confidence"), "algorithm"),
    ("llada", [[5]], dict(top_p=0.9), "top_p"),
    ("llada", [[5]], dict(block_length=3), "block_length"),
    ("llada", [[5]], dict(steps=3, block_length=4), "steps"),
    ("llada", [[5]], dict(confidence_eos_eot_inf=True), "eot"),
    ("llada", [[5]], dict(schedule="cosine"), "schedule"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_arguments_raise_errors_naming_them(family, prompts, kw, match):
    cfg, params = tiny_model(family)
    with pytest.raises(ValueError, match=match):
        generate(cfg, params, prompts, **{"gen_length": 8, "steps": 8, **kw})


def test_reference_suppression_flags_are_the_explicit_token_lists():
    # LLaDA's logits_eos_inf bans EOS; confidence_eos_eot_inf makes EOS and EOT revealed last.
    cfg, params = tiny_model("llada")
    kw = dict(gen_length=8, steps=8, block_length=4)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12]]
    with_flags = generate(cfg, params, prompts, logits_eos_inf=True, confidence_eos_eot_inf=True, eot_token_id=37,
                          **kw).tokens
    programs = compiled_programs()
    explicit = generate(cfg, params, prompts, suppress_tokens=[EOS], confidence_suppress_tokens=[EOS, 37],
                        **kw).tokens
    np.testing.assert_array_equal(with_flags, explicit)
    assert compiled_programs() == programs  # the very same compiled program
    assert EOS not in with_flags
