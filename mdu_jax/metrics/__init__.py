"""Pure metric functions of TOFU / open-unlearning, the MDU paper and RWKU (no model code).

One idea per module: ``rouge`` (rouge_score ROUGE-L/1 recall), ``rwku_rouge`` (the pip
``rouge`` package's summary-level ROUGE-L that RWKU scores with), ``probability`` (per-token
probabilities and the normalised multiple-choice probability), ``truth_ratio`` (R and its
forget / retain aggregations, MDU's raw ratio), ``forget_quality`` (two-sample KS p-value, KS
statistic, 1-Wasserstein distance of log truth ratios),
``utility`` (harmonic-mean model utility), ``privacy`` (MIA scores, AUC, privleak),
``memorization`` (exact memorisation, extraction strength), ``qa`` (SQuAD normalisation, token
F1, BBH answer extraction, n-gram entropy fluency, multiple-choice accuracy), ``answer_shape``
(empty / short answer rates, length relative to a reference model), ``fact_recall`` (is the key
fact in the generated answer).
"""

from mdu_jax.metrics.answer_shape import (empty_answer_rate, mean_word_count, relative_length,
                                          short_answer_rate, word_count)
from mdu_jax.metrics.fact_recall import contains_fact, fact_hits, fact_recall
from mdu_jax.metrics.forget_quality import forget_quality, ks_statistic, log_ratio_wasserstein
from mdu_jax.metrics.memorization import exact_memorization, extraction_strength
from mdu_jax.metrics.privacy import min_k_plus_plus_score, min_k_score, mia_auc, privleak, zlib_score
from mdu_jax.metrics.probability import normalised_probability, prob_from_avg_nll
from mdu_jax.metrics.qa import (bbh_extract_answer, exact_match, fluency_entropy, normalize_answer,
                                token_f1)
from mdu_jax.metrics.rouge import rouge_recall, rouge_scores
from mdu_jax.metrics.rwku_rouge import rwku_rouge_l_recall
from mdu_jax.metrics.truth_ratio import (forget_truth_ratio, mdu_truth_ratio, retain_truth_ratio,
                                         truth_ratio)
from mdu_jax.metrics.utility import harmonic_mean, model_utility, MODEL_UTILITY_KEYS

__all__ = ["empty_answer_rate", "mean_word_count", "relative_length", "short_answer_rate", "word_count",
           "contains_fact", "fact_hits", "fact_recall", "ks_statistic", "log_ratio_wasserstein",
           "forget_quality", "exact_memorization", "extraction_strength", "min_k_score",
           "min_k_plus_plus_score", "mia_auc", "privleak", "zlib_score", "normalised_probability",
           "prob_from_avg_nll", "bbh_extract_answer", "exact_match", "fluency_entropy",
           "normalize_answer", "token_f1", "rouge_recall", "rouge_scores", "rwku_rouge_l_recall",
           "forget_truth_ratio", "mdu_truth_ratio", "retain_truth_ratio", "truth_ratio",
           "harmonic_mean", "model_utility", "MODEL_UTILITY_KEYS"]
