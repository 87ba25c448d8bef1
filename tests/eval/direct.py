"""Direct computations that evaluation-pipeline tests compare per example against: one padded
forward pass read at chosen positions, and greedy generation of one prompt at a time with the test
suite's NumPy samplers (tests/sampling/reference_np.py)."""

import jax
import numpy as np

import mdu_jax as mj
from tests.sampling.reference_np import dream_generate, llada_generate


def scaled(params, factor):
    """`params` with every matrix (kernels, embedding) multiplied by `factor`: sharper attention and
    more peaked predictions than the fixture's, so outputs depend on the prompt and greedy choices
    are not near ties."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x * factor if path[-1].key in ("kernel", "embedding") else x, params)


def log_probs_at(cfg, params, sequences, positions):
    """float64 log-softmax rows [N, V]: sequence n's prediction at positions[n].

    One forward pass over the sequences right-padded to a common length with padding masked out,
    which leaves each row's logits as if it were alone (tests/models/test_properties.py)."""
    T = max(len(s) for s in sequences)
    ids = np.full((len(sequences), T), cfg.pad_token_id, np.int32)
    mask = np.zeros((len(sequences), T), np.int32)
    for b, s in enumerate(sequences):
        ids[b, :len(s)], mask[b, :len(s)] = s, 1
    logits = np.asarray(jax.jit(lambda p, i, m: mj.forward(cfg, p, i, m))(params, ids, mask), np.float64)
    rows = np.stack([logits[b, i] for b, i in enumerate(positions)])
    return np.asarray(jax.nn.log_softmax(rows, axis=-1))


def stop_ids(cfg, tokenizer):
    """EOS and the families' end-of-turn tokens."""
    vocab = tokenizer.get_vocab()
    return {cfg.eos_token_id} | {vocab[t] for t in ("<|eot_id|>", "<|im_end|>") if t in vocab}


def greedy_text(cfg, params, tokenizer, prompt, *, gen_length, steps, algorithm, cut_newline=False):
    """Greedy generation of `prompt` alone (LLaDA: low-confidence remasking in one block, the
    official schedule; Dream: `algorithm`), cut at the first stop token, decoded with special
    tokens skipped, optionally cut at the first newline, stripped."""
    if cfg.family == "llada":
        assert algorithm == "low_confidence"
        out = llada_generate(cfg, params, prompt, gen_length=gen_length, steps=steps, block_length=gen_length)
    else:
        out = dream_generate(cfg, params, prompt, gen_length=gen_length, steps=steps, alg=algorithm)
    ids = [int(i) for i in out]
    stops = stop_ids(cfg, tokenizer)
    cut = next((k for k, i in enumerate(ids) if i in stops), len(ids))
    text = tokenizer.decode(ids[:cut], skip_special_tokens=True)
    return (text.split("\n")[0] if cut_newline else text).strip()
