"""Leakage and robustness probes for unlearned diffusion LMs (issue 18): does the forgotten
knowledge come back?

- ``quantization``: round-to-nearest per-output-channel int8 / int4 quantise-dequantise of a
  params tree (the quantisation attack).
- ``infilling``: the partial-reveal attack: reveal a fraction r of an answer's tokens and
  measure how many of the hidden ones the model fills in.
- ``knowledge``: what a model states about question-answer rows (greedy key-fact recall,
  ROUGE-L recall, answer probability): the score the other probes report.
- ``leakage``: sampled answers to the forget questions, best-of-k and mean key-fact hits.
- ``table``: the probes' result as a plain-text table.
- ``plots``: the infilling and relearning curves as PNGs beside ``probes.json``.

The relearning attack trains, so it lives a layer up, in ``mdu_jax.experiments.relearn``; the
runner of every probe (``experiments.probes``) and its command (``experiments.probe_command``,
``python -m mdu_jax.evaluate --probes``) too.
"""

from mdu_jax.eval.probes import infilling, knowledge, leakage, plots, quantization, table

__all__ = ["infilling", "knowledge", "leakage", "plots", "quantization", "table"]
