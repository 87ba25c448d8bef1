"""Leakage and robustness probes for unlearned diffusion LMs (issue 18): does the forgotten
knowledge come back?

- ``quantization``: round-to-nearest per-output-channel int8 / int4 quantise-dequantise of a
  params tree (the quantisation attack).
- ``infilling``: the partial-reveal attack: reveal a fraction r of an answer's tokens and
  measure how many of the hidden ones the model fills in.

The relearning attack trains, so it lives a layer up, in ``mdu_jax.experiments.relearn``.
"""

from mdu_jax.eval.probes import infilling, quantization

__all__ = ["infilling", "quantization"]
