"""What a model still states about a set of question-answer rows: the score every probe reports.

``knowledge`` reads three numbers off one model and one set of rows ({question, answer[, fact]}
dicts, as TOFU's files and the demo world's hold them):

- ``fact_recall``: the fraction of greedy generations that state the row's key fact
  (``metrics.fact_recall``; only when every row carries a ``fact``, as the demo world's do),
- ``rougeL_recall``: mean ROUGE-L recall of the greedy generation against the answer,
- ``prob``: mean over rows of exp(-per-token NLL) of the answer plus the template's end-of-turn
  tail given the question, by LLaDA's Monte Carlo estimator at a fixed seed (the
  open-unlearning profile's answer probability), so equal weights give equal numbers.

Generation uses the caller's sampler settings (``SamplerSettings``) at temperature 0, cut at EOS
or end of turn, the way ``eval.tofu`` generates.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from mdu_jax import metrics as M
from mdu_jax.eval import scoring as S
from mdu_jax.eval.answer_checks import row_facts
from mdu_jax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """The denoising sampler of greedy generations: new tokens, steps, LLaDA block length
    (None: one block), the remasking algorithm (None: the family's default) and LLaDA's step
    schedule ('official' or 'dllm', see ``sampling.generate``)."""

    gen_length: int = 32
    steps: int = 32
    block_length: int | None = None
    algorithm: str | None = None
    schedule: str = "official"

    def as_kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments of ``sampling.generate`` / ``scoring.generate_texts``."""
        return dataclasses.asdict(self)


def check_rows(rows: Sequence[dict], where: str) -> list[dict]:
    """`rows` as a list, each a dict with non-empty string ``question`` and ``answer``; a ValueError
    naming `where` and the row otherwise."""
    rows = list(rows)
    if not rows:
        raise ValueError(f"{where}: no rows")
    for n, row in enumerate(rows):
        for key in ("question", "answer"):
            if not isinstance(row, dict) or not isinstance(row.get(key), str) or not row[key].strip():
                raise ValueError(f"{where}[{n}]: expected a non-empty string {key!r}")
    return rows


def answer_triples(tokenizer, rows: Sequence[dict]) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt ids, answer content ids, template tail ids) per row: the chat-templated prompt, the
    answer's own tokens, and what the template adds after them (LLaDA ``<|eot_id|>``)."""
    out = []
    for row in rows:
        prompt, response = S.response_ids(tokenizer, row["question"], row["answer"])
        n = S.content_length(tokenizer, response)
        out.append((prompt, response[:n], response[n:]))
    return out


def greedy_answers(cfg: ModelConfig, params, tokenizer, rows: Sequence[dict], sampler: SamplerSettings, *,
                   batch_size: int = 32) -> list[str]:
    """Greedy generations (str [N]) for the rows' questions, cut at EOS / end of turn."""
    prompts = [S.chat_prompt_ids(tokenizer, row["question"]) for row in rows]
    return S.generate_texts(cfg, params, tokenizer, prompts, batch_size=batch_size, **sampler.as_kwargs())


def text_scores(rows: Sequence[dict], texts: Sequence[str]) -> dict[str, Any]:
    """{fact_recall (None without facts), rougeL_recall}: means over the rows of generated `texts`."""
    facts = row_facts(rows)
    rouge = [M.rouge_scores(row["answer"], t)["rougeL_recall"] for row, t in zip(rows, texts)]
    return {"fact_recall": None if facts is None else M.fact_recall(texts, facts),
            "rougeL_recall": float(np.mean(rouge))}


def knowledge(cfg: ModelConfig, params, tokenizer, rows: Sequence[dict], sampler: SamplerSettings, *,
              mc_samples: int = 32, seed: int = 0, batch_size: int = 32) -> dict[str, Any]:
    """{fact_recall, rougeL_recall, prob, generations}: what the model states about `rows` (see the
    module docstring); ``generations`` are the greedy texts, one per row."""
    rows = check_rows(rows, "rows")
    texts = greedy_answers(cfg, params, tokenizer, rows, sampler, batch_size=batch_size)
    pairs = [S.response_ids(tokenizer, row["question"], row["answer"]) for row in rows]
    nll = S.answer_avg_nll(cfg, params, pairs, estimator="llada", mc_samples=mc_samples, seed=seed)
    return {**text_scores(rows, texts), "prob": float(np.mean(np.exp(-nll))), "generations": list(texts)}


__all__ = ["SamplerSettings", "check_rows", "answer_triples", "greedy_answers", "text_scores", "knowledge"]
