"""Model-facing scores for the evaluations: answer NLLs, teacher-forced token statistics, generations.

How the teacher-forced metrics of TOFU / open-unlearning are adapted to a masked diffusion model:

- **Answer probability and truth ratio** need log P(a | q). A masked diffusion LM has no exact
  likelihood; its evaluation estimators give one. The open-unlearning profile uses LLaDA's
  Monte Carlo estimator of the masked-diffusion bound on the *total* answer log-likelihood
  (``likelihood.loglikelihood``) and divides by |a|, the number of scored tokens (the answer plus
  the chat template's end-of-turn tail, as open-unlearning scores the EOS), giving the
  per-token average NLL; ``prob = exp(-avg_nll)`` is the per-token geometric mean of §0 of the
  reference. The MDU profile uses MDU's Eq. 14 estimator on the bare answer tokens.
- **Exact memorisation, extraction strength and Min-K% (privleak)** need per-token log-probs and
  argmax predictions under teacher forcing: p(y_t | q, y_<t). For a masked diffusion LM the
  matching quantity is the prediction at answer position t when the prompt and the gold tokens
  before t are visible and positions t..end are masked (the left-to-right factorisation of the
  model; the product over t of these conditionals is a normalised distribution over answers of
  that length). ``teacher_forced`` computes it with one masked row per answer token (compiled
  once per length bucket). It is deterministic, so these metrics have no Monte Carlo noise.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from mdu_jax.data.encoding import encode_pair
from mdu_jax.likelihood import LikelihoodBatch, eq14_nll, likelihood_batches, loglikelihood
from mdu_jax.models.config import ModelConfig, inference_config
from mdu_jax.models.transformer import hidden_states, logits_from_hidden
from mdu_jax.sampling import generate
from mdu_jax.sampling.prompts import (BatchPlan, batch_bucket, bucket_length, pack_rows, plan_batches,
                                     shared_buckets)

EOT_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|endoftext|>")


def chat_prompt_ids(tokenizer, content: str, suffix: str = "") -> list[int]:
    """Token ids of the chat template's user turn with the generation prompt, then ``suffix``
    (e.g. RWKU's 'Answer:') encoded without special tokens."""
    out = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=True,
                                        add_generation_prompt=True)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    ids = [int(i) for i in out]
    if suffix:
        ids += [int(i) for i in tokenizer(suffix, add_special_tokens=False)["input_ids"]]
    return ids


def response_ids(tokenizer, question: str, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) through ``encode_pair``: the response is the answer plus the
    chat template's tail (LLaDA ``<|eot_id|>``, Dream ``<|im_end|>\\n``)."""
    ids, plen = encode_pair(tokenizer, question, answer)
    return ids[:plen], ids[plen:]


def content_length(tokenizer, response: Sequence[int]) -> int:
    """How many leading response tokens are content: up to the first special token (the template
    tail), the positions open-unlearning keeps for EM / ES / Min-K ("ignore the EOS").

    The unknown token is special to the tokenizer but stands for answer text (a character the
    vocabulary lacks), so it does not end the content.
    """
    special = set(int(i) for i in tokenizer.all_special_ids)
    if getattr(tokenizer, "unk_token_id", None) is not None:
        special.discard(int(tokenizer.unk_token_id))
    for i, t in enumerate(response):
        if int(t) in special:
            return i
    return len(response)


def stop_ids(cfg: ModelConfig, tokenizer) -> list[int]:
    """EOS plus whichever end-of-turn tokens the tokenizer has: generations are cut at the first."""
    ids = {int(cfg.eos_token_id)}
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        ids.update(int(vocab[t]) for t in EOT_TOKENS if t in vocab)
    return sorted(ids)


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


def answer_nll_batches(pairs: Sequence[tuple[list[int], list[int]]], *, mc_samples: int = 128,
                       rows_per_forward: int = 32, chunk: int = 64,
                       buckets: Sequence[int] | None = None) -> list[LikelihoodBatch]:
    """The forward passes ``answer_avg_nll`` runs for these pairs, in order (either estimator)."""
    return [b for lo, hi in _chunks(len(pairs), chunk)
            for b in likelihood_batches([(len(p), len(a)) for p, a in pairs[lo:hi]], mc_samples=mc_samples,
                                        rows_per_forward=rows_per_forward, buckets=buckets)]


def answer_avg_nll(cfg: ModelConfig, params, pairs: Sequence[tuple[list[int], list[int]]], *,
                   estimator: str = "llada", mc_samples: int = 128, seed: int = 0, rows_per_forward: int = 32,
                   chunk: int = 64, buckets: Sequence[int] | None = None, progress=None,
                   on_forward: Callable[[int], None] | None = None) -> np.ndarray:
    """float64 [N]: per-token average NLL (nats) of each (prompt, answer) pair.

    'llada': -loglikelihood / |answer| (LLaDA's stratified estimator of the total, groups of
    gcd(mc_samples, 16)); 'eq14': MDU's Eq. 14 per-token estimator. Pairs are scored ``chunk`` at
    a time (``progress``, a tqdm bar, advances per pair; ``on_forward(1)`` runs after each of the
    ``answer_nll_batches`` forward passes); chunk c uses seed ``seed + c``.
    ``buckets``: padded lengths (default: the likelihood module's); fewer buckets, fewer compiles.
    """
    if estimator not in ("llada", "eq14"):
        raise ValueError(f"estimator: expected 'llada' or 'eq14', got {estimator!r}")
    out = np.zeros(len(pairs), dtype=np.float64)
    for c, (lo, hi) in enumerate(_chunks(len(pairs), chunk)):
        part = list(pairs[lo:hi])
        if estimator == "llada":
            ll = loglikelihood(cfg, params, part, mc_samples=mc_samples, batch_size=math.gcd(mc_samples, 16),
                               seed=seed + c, rows_per_forward=rows_per_forward, buckets=buckets,
                               on_forward=on_forward)
            lengths = np.asarray([max(1, len(a)) for _, a in part], dtype=np.float64)
            out[lo:hi] = -ll / lengths
        else:
            out[lo:hi] = eq14_nll(cfg, params, part, mc_samples=mc_samples, seed=seed + c,
                                  rows_per_forward=rows_per_forward, buckets=buckets, on_forward=on_forward)
        if progress is not None:
            progress.update(hi - lo)
    return out


@functools.partial(jax.jit, static_argnames=("cfg",))
def _token_stats(cfg: ModelConfig, params, input_ids, attention_mask, read_at, targets):
    """Per row: (log p(target), argmax, mu, sigma) of the model's distribution at ``read_at``.

    input_ids / attention_mask int32 [R, T]; read_at, targets int32 [R]. mu = E_p[log p] and
    sigma^2 = Var_p[log p] (Min-K%++), all float32 from fp32 log-softmax.
    """
    h = hidden_states(cfg, params, input_ids, attention_mask)
    h = jnp.take_along_axis(h, read_at[:, None, None], axis=1)[:, 0]
    logp = jax.nn.log_softmax(logits_from_hidden(cfg, params, h).astype(jnp.float32), axis=-1)
    p = jnp.exp(logp)
    mu = jnp.sum(p * logp, axis=-1)
    var = jnp.sum(p * logp * logp, axis=-1) - mu * mu
    target_lp = jnp.take_along_axis(logp, targets[:, None], axis=-1)[:, 0]
    return target_lp, jnp.argmax(logp, axis=-1).astype(jnp.int32), mu, jnp.sqrt(jnp.maximum(var, 0.0))


@dataclasses.dataclass(frozen=True)
class TokenBatch:
    """One forward pass of ``teacher_forced``: ``rows`` (pair, answer position) padded to
    ``padded_rows`` rows of ``length`` tokens."""

    length: int
    padded_rows: int
    rows: tuple[tuple[int, int], ...]


def teacher_forced_batches(pairs: Sequence[tuple[list[int], list[int]]], scored: Sequence[int] | None = None, *,
                           rows_per_forward: int = 64, buckets: Sequence[int] | None = None) -> list[TokenBatch]:
    """The forward passes ``teacher_forced`` runs, in order: rows grouped by the length bucket of
    their pair (buckets less than ``SPLIT_RATIO`` apart in one group, ``shared_buckets``),
    ``batch_bucket(rows in the group, rows_per_forward)`` rows per pass."""
    scored = [len(a) for _, a in pairs] if scored is None else list(scored)
    shared = shared_buckets([bucket_length(len(p) + len(a), buckets) for p, a in pairs])
    by_bucket: dict[int, list[tuple[int, int]]] = {}
    for n, (prompt, answer) in enumerate(pairs):
        for t in range(min(scored[n], len(answer))):
            by_bucket.setdefault(shared[bucket_length(len(prompt) + len(answer), buckets)], []).append((n, t))
    out = []
    for T, members in sorted(by_bucket.items()):
        R = batch_bucket(len(members), rows_per_forward)
        out += [TokenBatch(T, R, tuple(members[lo:hi])) for lo, hi in _chunks(len(members), R)]
    return out


def teacher_forced(cfg: ModelConfig, params, pairs: Sequence[tuple[list[int], list[int]]],
                   scored: Sequence[int] | None = None, *, rows_per_forward: int = 64,
                   buckets: Sequence[int] | None = None, progress=None,
                   on_forward: Callable[[int], None] | None = None) -> list[dict[str, np.ndarray]]:
    """Left-to-right teacher-forced statistics of the first ``scored[n]`` answer tokens of pair n.

    Row t of pair n is ``[prompt | y_<t | MASK ... MASK]`` (the whole answer length, so the model
    sees how long the answer is, as in generation) and reads position |prompt| + t. Returns per
    pair {'logp', 'pred', 'mu', 'sigma', 'gold'}: arrays of length scored[n] (float64 / int64).
    Rows run in the passes of ``teacher_forced_batches``; ``progress`` (a tqdm bar) advances per
    row, ``on_forward(1)`` runs after each pass.
    """
    scored = [len(a) for _, a in pairs] if scored is None else list(scored)
    out = [{k: np.zeros(min(scored[n], len(a)), dtype=np.float64 if k not in ("pred", "gold") else np.int64)
            for k in ("logp", "pred", "mu", "sigma", "gold")} for n, (_, a) in enumerate(pairs)]
    run_cfg = inference_config(cfg)
    for b in teacher_forced_batches(pairs, scored, rows_per_forward=rows_per_forward, buckets=buckets):
        R, T, chunk = b.padded_rows, b.length, list(b.rows)
        padded = chunk + [chunk[0]] * (R - len(chunk))
        # answer token t is read with the answer's first t tokens visible and the rest masked
        ids, attn = pack_rows([list(pairs[n][0]) + list(pairs[n][1][:t]) + [cfg.mask_token_id] * (len(pairs[n][1]) - t)
                               for n, t in padded], R, T, cfg.pad_token_id)
        read_at = np.asarray([len(pairs[n][0]) + t for n, t in padded], dtype=np.int32)
        targets = np.asarray([pairs[n][1][t] for n, t in padded], dtype=np.int32)
        lp, pred, mu, sigma = (np.asarray(x) for x in _token_stats(run_cfg, params, ids, attn, read_at, targets))
        for r, (n, t) in enumerate(chunk):
            o = out[n]
            o["logp"][t], o["pred"][t], o["mu"][t], o["sigma"][t] = lp[r], pred[r], mu[r], sigma[r]
            o["gold"][t] = targets[r]
        if progress is not None:
            progress.update(len(chunk))
        if on_forward is not None:
            on_forward(1)
    return out


def generation_batches(prompts: Sequence[list[int]], *, gen_length: int, batch_size: int = 32, chunk: int = 128,
                       buckets: Sequence[int] | None = None) -> list[BatchPlan]:
    """The batches ``generate_texts`` runs (``chunk`` prompts per ``generate`` call, each call
    batched by ``sampling.prompts.plan_batches``); indices are relative to their chunk."""
    return [b for lo, hi in _chunks(len(prompts), chunk)
            for b in plan_batches([len(p) for p in prompts[lo:hi]], gen_length, batch_size, buckets)]


def generate_texts(cfg: ModelConfig, params, tokenizer, prompts: Sequence[list[int]], *, gen_length: int,
                   steps: int, block_length: int | None = None, algorithm: str | None = None,
                   schedule: str = "official", batch_size: int = 32, chunk: int = 128, cut_newline: bool = False,
                   stop_at_eos: bool = True, buckets: Sequence[int] | None = None, progress=None,
                   on_forward: Callable[[int], None] | None = None) -> list[str]:
    """Greedy (temperature 0) generations of each prompt, decoded with special tokens skipped,
    cut at EOS / end of turn (and at the first newline with ``cut_newline``, as RWKU), stripped.
    ``stop_at_eos=False`` decodes every generated token instead (MDU's scripts: whatever the
    model wrote after EOS stays in the text; only the special tokens themselves are dropped).

    With the cut, a batch stops as soon as every row's text is settled (``generate``'s
    ``stop_early``: the same texts, fewer steps); without it every step runs. ``progress`` (a tqdm bar) advances per prompt; ``on_forward(n)`` after
    each segment of denoising steps (see ``generate``)."""
    stops = stop_ids(cfg, tokenizer) if stop_at_eos else []
    texts: list[str] = []
    for lo, hi in _chunks(len(prompts), chunk):
        out = generate(cfg, params, list(prompts[lo:hi]), tokenizer=tokenizer, gen_length=gen_length, steps=steps,
                       block_length=block_length, temperature=0.0, algorithm=algorithm, schedule=schedule,
                       batch_size=batch_size, stop_token_ids=stops, prompt_buckets=buckets, stop_early=stop_at_eos,
                       on_forward=on_forward)
        for text in out.texts:
            if cut_newline:
                text = text.split("\n")[0]
            texts.append(text.strip())
        if progress is not None:
            progress.update(hi - lo)
    return texts


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar (a no-op object when disabled)."""
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)
