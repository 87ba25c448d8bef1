"""Tokenisation through the chat template, and deterministic bucketed batches."""

import numpy as np
import pytest

import mdu_jax as mj
from mdu_jax.data.batching import BatchPlan, hf_length_grouped
from mdu_jax.data.encoding import DataError, Example, encode_pair, encode_rows
from tests.fixtures import write_hf_checkpoint


@pytest.fixture(scope="module")
def llada_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llada")
    write_hf_checkpoint(folder, "llada")
    return mj.load_pretrained(folder)[2]


def test_prompt_is_the_generation_prompt_and_response_has_the_template_tail(llada_tokenizer):
    tok = llada_tokenizer
    ids, plen = encode_pair(tok, "who wrote the book ?", "the author")
    prompt = tok.apply_chat_template([{"role": "user", "content": "who wrote the book ?"}],
                                     tokenize=False, add_generation_prompt=True)
    # The tiny word-level tokenizer drops whitespace, so compare without it.
    assert "".join(tok.decode(ids[:plen]).split()) == "".join(prompt.split())
    assert tok.convert_ids_to_tokens(ids[plen:]) == ["the", "author", "<|eot_id|>"]


def test_overlong_rows_are_reported_or_refused(llada_tokenizer):
    rows = [{"question": "who wrote the book ?", "answer": " ".join(["the"] * 40)}]
    with pytest.raises(DataError, match=r"forget row 0: \d+ tokens exceed data.max_length=20"):
        encode_rows(llada_tokenizer, rows, is_forget=True, max_length=20, split="forget")
    assert encode_rows(llada_tokenizer, rows, is_forget=True, max_length=20, truncation="drop") == []
    cut = encode_rows(llada_tokenizer, rows, is_forget=True, max_length=20, truncation="right")
    assert len(cut[0].input_ids) == 20


def test_truncation_is_reported_per_split(llada_tokenizer, caplog):
    """Each split's warning counts its own rows; the shared report keeps totals and per-split counts
    (issue 16 item 8: the retain warning once repeated the forget counts)."""
    from mdu_jax.data.encoding import TruncationReport

    long = {"question": "who wrote the book ?", "answer": " ".join(["the"] * 40)}
    short = {"question": "who wrote the book ?", "answer": "the author"}
    report = TruncationReport()
    with caplog.at_level("WARNING", logger="mdu_jax"):
        encode_rows(llada_tokenizer, [long, short], is_forget=True, max_length=20, truncation="right",
                    split="forget", report=report)
        encode_rows(llada_tokenizer, [long, long, short], is_forget=False, max_length=20, truncation="drop",
                    split="retain", report=report)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("forget: 1 row(s) truncated and 0 dropped") for m in messages), messages
    assert any(m.startswith("retain: 0 row(s) truncated and 2 dropped") for m in messages), messages
    assert (report.truncated, report.dropped) == (1, 2)
    assert report.truncated_by_split == {"forget": 1, "retain": 0}
    assert report.dropped_by_split == {"forget": 0, "retain": 2}


def test_empty_or_malformed_rows_are_named(llada_tokenizer):
    with pytest.raises(DataError, match=r"retain row 1: missing or empty 'answer'"):
        encode_rows(llada_tokenizer, [{"question": "a", "answer": "b"}, {"question": "c"}], is_forget=False,
                    max_length=64, split="retain")


def _examples(n, forget, rng):
    out = []
    for _ in range(n):
        L = int(rng.integers(5, 30))
        out.append(Example(rng.integers(2, 90, size=L).astype(np.int32), int(rng.integers(1, 4)), forget))
    return out


def test_batches_are_deterministic_bucketed_and_cover_an_epoch():
    rng = np.random.default_rng(0)
    forget, retain = _examples(10, True, rng), _examples(22, False, rng)
    plan = BatchPlan(forget, retain, batch_size=4, seed=3, buckets=[8, 16, 32], pad_id=1)
    assert plan.steps_per_epoch == 8
    seen = []
    for s in range(plan.steps_per_epoch):
        b = plan.batch(s)
        assert b.input_ids.shape[1] in (8, 16, 32) and b.input_ids.shape[0] == 4
        assert not b.maskable[b.attention_mask == 0].any()
        again = plan.batch(s)  # stateless: the same step gives the same batch
        np.testing.assert_array_equal(b.input_ids, again.input_ids)
        seen.extend(plan.indices(s)[0].tolist())
    assert len(set(seen)) == 32  # one epoch visits every example once
    assert not np.array_equal(plan.indices(0)[0], plan.indices(8)[0])  # a new order each epoch


def test_paired_batches_put_forget_rows_first():
    rng = np.random.default_rng(1)
    plan = BatchPlan(_examples(6, True, rng), _examples(5, False, rng), batch_size=4, seed=0, buckets=[32],
                     pad_id=1, mixing="paired", forget_batch_size=2)
    for s in range(7):
        b = plan.batch(s)
        np.testing.assert_array_equal(b.is_forget, [True, True, False, False])


def test_preference_batches_carry_alt_rows_even_without_a_forget_row():
    """IdkPO / DPO steps read alt_* from every batch: a batch of retain rows only must have them too
    (their alt response is the row itself), so that every step sees the same arrays."""
    rng = np.random.default_rng(2)
    forget = [Example(e.input_ids, e.prompt_len, True, e.input_ids[::-1].copy(), e.prompt_len)
              for e in _examples(2, True, rng)]
    plan = BatchPlan(forget, _examples(30, False, rng), batch_size=2, seed=0, buckets=[32], pad_id=1)
    batches = [plan.batch(s) for s in range(plan.steps_per_epoch)]
    assert any(not b.is_forget.any() for b in batches)  # the case that used to lose its alt arrays
    for b in batches:
        assert set(b.as_dict()) == {"input_ids", "maskable", "attention_mask", "is_forget", "alt_input_ids",
                                    "alt_maskable", "alt_attention_mask"}
        keep = ~b.is_forget
        np.testing.assert_array_equal(b.alt_input_ids[keep], b.input_ids[keep])


def test_empty_and_too_small_data_are_refused():
    with pytest.raises(DataError, match="both empty"):
        BatchPlan([], [], batch_size=2, seed=0, buckets=[8], pad_id=1)
    rng = np.random.default_rng(2)
    with pytest.raises(DataError, match="batch_size=8 exceeds the 3 training examples"):
        BatchPlan(_examples(3, True, rng), [], batch_size=8, seed=0, buckets=[32], pad_id=1)


def _hf_order_by_hand(perm, lens, group_rows):
    """transformers' get_length_grouped_indices, restated: mega-batches of min(n // (4 g), 50) (>= 1)
    groups of g rows from the permutation, each sorted longest first, the epoch's longest row
    swapped to the very front."""
    n = len(perm)
    mult = min(n // (group_rows * 4), 50) or 1
    megas = [list(perm[i:i + mult * group_rows]) for i in range(0, n, mult * group_rows)]
    megas = [sorted(m, key=lambda j: lens[j], reverse=True) for m in megas]
    first = [lens[m[0]] for m in megas]
    k = int(np.argmax(first))
    megas[0][0], megas[k][0] = megas[k][0], megas[0][0]
    return [j for m in megas for j in m]


def test_hf_length_grouping_is_the_trainers_sampler_order():
    """data.length_grouping='hf' (the paper presets): the micro-batches of an epoch are consecutive
    slices of HF's LengthGroupedSampler order over groups of batch_size x grad_accum rows."""
    rng = np.random.default_rng(0)
    for n, g in ((800, 16), (440, 16), (37, 16), (2000, 8)):
        lens = rng.integers(5, 60, n)
        perm = rng.permutation(n)
        assert hf_length_grouped(perm, lens, g).tolist() == _hf_order_by_hand(perm, lens, g)
    examples = [Example(np.arange(2 + (i * 7) % 23, dtype=np.int32), 1, i % 2 == 0) for i in range(48)]
    plan = BatchPlan([e for e in examples if e.is_forget], [e for e in examples if not e.is_forget], batch_size=4,
                     seed=3, buckets=[32], pad_id=0, length_grouping="hf", group_batches=2, padding="longest")
    pool_lens = np.array([len(e.input_ids) for e in plan.pool])
    perm = np.random.default_rng([3, 0, 0]).permutation(len(plan.pool))
    order = np.concatenate([plan.indices(s)[0] for s in range(plan.steps_per_epoch)])
    assert order.tolist() == _hf_order_by_hand(perm, pool_lens, 8)
    assert len(plan.pool[order[0]].input_ids) == pool_lens.max()          # the longest row comes first
    first = plan.batch(0)
    assert first.input_ids.shape[1] == max(len(plan.pool[j].input_ids) for j in order[:4])
    shuffled = BatchPlan(plan.forget, plan.retain, batch_size=4, seed=3, buckets=[32], pad_id=0)
    assert np.concatenate([shuffled.indices(s)[0] for s in range(shuffled.steps_per_epoch)]).tolist() != order.tolist()
