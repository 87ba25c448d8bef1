"""Generation leakage: does sampling, rather than greedy decoding, still say the forgotten answer?

Greedy decoding shows the model's single most likely answer; an attacker can instead sample the
original forget questions many times and keep any answer that states the fact. For each
remasking algorithm, ``generation_leakage`` samples every question ``samples`` times at
``temperature`` (Gumbel noise on the token choice, LLaDA and Dream alike; each sample its own
random stream: the prompt list repeated, so row index = sample * N + question) and reports:

- ``best_of_k``: fraction of questions for which at least one of the samples states the key fact
  (rows with a ``fact``) or, without facts, the mean over questions of the best ROUGE-L recall,
- ``mean``: the same averaged over all samples (the hit rate of a single sample).

A model that forgot the fact leaks it about as often as the retain-only reference does by
guessing (the demo world's ``fact_chance``); a model that only moved its greedy answer leaks it
in a good share of samples.

Where the rows carry a ``paraphrased_question`` (TOFU's forget*_perturbed files, the demo world's
author facts), ``paraphrased_rows`` gives the same rows asked in other words: unlearning that only
caught the original wording leaks on them. The answer and key fact stay the row's own.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mdu_jax import metrics as M
from mdu_jax.eval import scoring as S
from mdu_jax.eval.answer_checks import row_facts
from mdu_jax.eval.probes.knowledge import SamplerSettings, check_rows
from mdu_jax.models.config import ModelConfig
from mdu_jax.sampling import generate
from mdu_jax.sampling.sampler import DEFAULT_ALGORITHM


def sample_hits(rows: Sequence[dict], texts: Sequence[str], samples: int) -> np.ndarray:
    """float64 [samples, N]: per sample and row, 1/0 for a key-fact hit (rows with facts) or the
    ROUGE-L recall against the answer; `texts` ordered sample-major (sample * N + row)."""
    n = len(rows)
    if len(texts) != samples * n:
        raise ValueError(f"sample_hits: expected {samples} x {n} texts, got {len(texts)}")
    facts = row_facts(rows)
    if facts is not None:
        return M.fact_hits(list(texts), facts * samples).astype(np.float64).reshape(samples, n)
    return np.asarray([M.rouge_scores(rows[i % n]["answer"], t)["rougeL_recall"] for i, t in enumerate(texts)],
                      np.float64).reshape(samples, n)


def paraphrased_rows(rows: Sequence[dict]) -> list[dict]:
    """The rows that carry a non-empty string ``paraphrased_question``, each with that as its
    ``question`` (answer, fact and the rest unchanged), in their order; [] when none does."""
    return [dict(row, question=row["paraphrased_question"]) for row in rows
            if isinstance(row.get("paraphrased_question"), str) and row["paraphrased_question"].strip()]


def generation_leakage(cfg: ModelConfig, params, tokenizer, rows: Sequence[dict], sampler: SamplerSettings, *,
                       samples: int = 8, temperature: float = 1.0, algorithms: Sequence[str] | None = None,
                       seed: int = 0, batch_size: int = 32) -> dict[str, Any]:
    """{'score': 'fact_hit' | 'rougeL_recall', 'samples', 'temperature', 'algorithms': {algorithm:
    {best_of_k, mean}}} over `rows` (see the module docstring). `algorithms`: remasking
    algorithms of the model's family (default: the sampler's, i.e. the family default)."""
    rows = check_rows(rows, "rows")
    if samples < 1:
        raise ValueError(f"samples: expected >= 1, got {samples}")
    if not temperature > 0:
        raise ValueError(f"temperature: expected > 0 (temperature 0 is the greedy answer), got {temperature}")
    algorithms = list(algorithms) if algorithms else [sampler.algorithm or DEFAULT_ALGORITHM[cfg.family]]
    prompts = [S.chat_prompt_ids(tokenizer, row["question"]) for row in rows] * samples
    out: dict[str, Any] = {"score": "fact_hit" if row_facts(rows) is not None else "rougeL_recall",
                           "samples": int(samples), "temperature": float(temperature), "algorithms": {}}
    for algorithm in algorithms:
        settings = dict(sampler.as_kwargs(), algorithm=algorithm)
        gen = generate(cfg, params, prompts, tokenizer=tokenizer, temperature=temperature, seed=seed,
                       batch_size=batch_size, stop_token_ids=S.stop_ids(cfg, tokenizer), stop_early=True, **settings)
        hits = sample_hits(rows, [t.strip() for t in gen.texts], samples)
        out["algorithms"][algorithm] = {"best_of_k": float(hits.max(axis=0).mean()), "mean": float(hits.mean())}
    return out


__all__ = ["sample_hits", "paraphrased_rows", "generation_leakage"]
