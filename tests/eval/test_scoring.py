"""The masked-diffusion adaptations of teacher-forced quantities, against direct forward passes."""

import functools

import jax
import numpy as np
import pytest

import mdu_jax as mj
from mdu_jax.eval import scoring as S
from tests.fixtures import write_hf_checkpoint


@pytest.fixture(scope="module", params=["llada", "dream"])
def model(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    write_hf_checkpoint(folder, family=request.param)
    return mj.load_pretrained(folder)


def _logps(cfg, params, seqs):
    """Log-softmax of each sequence alone, from one right-padded forward (padding masked out)."""
    T = max(len(s) for s in seqs)
    ids = np.full((len(seqs), T), cfg.pad_token_id, np.int32)
    mask = np.zeros((len(seqs), T), np.int32)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    logits = _forward(cfg)(params, ids, mask)
    return list(np.asarray(_log_softmax(logits), np.float64))


@functools.lru_cache(maxsize=None)
def _forward(cfg):
    """mj.forward compiled once per config and shape (op by op it compiled a program per operation)."""
    return jax.jit(lambda p, i, m: mj.forward(cfg, p, i, m))


@jax.jit
def _log_softmax(logits):
    return jax.nn.log_softmax(logits.astype(np.float32), axis=-1)


def test_teacher_forced_is_left_to_right_masked_prediction(model):
    cfg, params, _ = model
    pairs = [([3, 10, 11, 4], [20, 21, 22, 23, 24]), ([3, 12, 4], [30, 31])]
    stats = S.teacher_forced(cfg, params, pairs, [4, 2], rows_per_forward=4)  # padding rows + 2 batches
    seqs = [prompt + answer[:t] + [cfg.mask_token_id] * (len(answer) - t)
            for (prompt, answer), n in zip(pairs, [4, 2]) for t in range(n)]
    ref = iter(_logps(cfg, params, seqs))
    for (prompt, answer), st in zip(pairs, stats):
        assert len(st["logp"]) == min(len(answer), 4 if len(answer) == 5 else 2)
        for t in range(len(st["logp"])):
            lp = next(ref)[len(prompt) + t]
            assert st["gold"][t] == answer[t]
            np.testing.assert_allclose(st["logp"][t], lp[answer[t]], atol=2e-5)
            assert st["pred"][t] == np.argmax(lp)
            p = np.exp(lp)
            np.testing.assert_allclose(st["mu"][t], (p * lp).sum(), atol=2e-5)
            np.testing.assert_allclose(st["sigma"][t], np.sqrt((p * lp * lp).sum() - (p * lp).sum() ** 2), atol=2e-4)


def test_one_token_answer_probability_is_exact(model):
    cfg, params, _ = model
    prompt, answer = [3, 10, 11, 4], [20]
    exact = -_logps(cfg, params, [prompt + [cfg.mask_token_id]])[0][len(prompt), answer[0]]
    for estimator in ("llada", "eq14"):
        nll = S.answer_avg_nll(cfg, params, [(prompt, answer)], estimator=estimator, mc_samples=4,
                                 rows_per_forward=4)
        np.testing.assert_allclose(nll, [exact], rtol=1e-5)


def test_content_length_and_stop_ids(model):
    cfg, _, tok = model
    prompt, response = S.response_ids(tok, "who wrote the book", "the author wrote the book")
    n = S.content_length(tok, response)
    assert tok.decode(response[:n]).strip() == "the author wrote the book"
    assert n < len(response)  # the template's end-of-turn is not content
    eot = "<|eot_id|>" if cfg.family == "llada" else "<|im_end|>"
    assert tok.convert_tokens_to_ids(eot) in S.stop_ids(cfg, tok) and cfg.eos_token_id in S.stop_ids(cfg, tok)
    assert S.chat_prompt_ids(tok, "who wrote the book") == prompt


def test_content_length_keeps_unknown_tokens():
    """An answer character the vocabulary lacks (the unknown token) is content, not the template tail."""
    from types import SimpleNamespace

    tok = SimpleNamespace(all_special_ids=[0, 1, 2], unk_token_id=0)  # 0 unk, 1 eos, 2 end of turn
    assert S.content_length(tok, [5, 0, 6, 2, 1]) == 3
    assert S.content_length(tok, [5, 6, 1, 0]) == 2
    assert S.content_length(SimpleNamespace(all_special_ids=[0, 1], unk_token_id=None), [5, 0, 6]) == 1
