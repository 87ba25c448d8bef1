"""mdu-jax: machine unlearning for masked diffusion language models (LLaDA, Dream) in JAX.

Public API::

    cfg = mdu_jax.ModelConfig.from_hf("hf_dir")            # or a config.json dict
    model = mdu_jax.models.Transformer(cfg, rngs=nnx.Rngs(0))   # the Flax NNX module
    params = mdu_jax.init_params(cfg, jax.random.key(0))   # its Params as a nested dict
    logits = mdu_jax.forward(cfg, params, input_ids, attention_mask=None)   # [B, T, V]
    cfg, params, tokenizer = mdu_jax.load_pretrained("hf_dir_or_checkpoint")
    mdu_jax.objectives.mdu_loss(...), mdu_jax.diffusion.mdlm_loss(...), mdu_jax.sampling.generate(...)
    mdu_jax.likelihood.eq14_nll(...)

Training, evaluation and the demo are imported on their own: ``mdu_jax.training``,
``mdu_jax.eval``, ``mdu_jax.demo`` (and the ``python -m`` entry points ``mdu_jax.train``,
``mdu_jax.evaluate``, ``mdu_jax.sweep_eval``).
"""

from mdu_jax import diffusion, likelihood, models, objectives, sampling
from mdu_jax.checkpoints import CheckpointError, load_pretrained
from mdu_jax.models.config import ConfigError, ModelConfig
from mdu_jax.models.params import abstract_params, init_params, logical_axes
from mdu_jax.models.transformer import forward, hidden_states, logits_from_hidden

__version__ = "0.1.0"

__all__ = ["ModelConfig", "ConfigError", "CheckpointError", "init_params", "abstract_params",
           "logical_axes", "forward", "hidden_states", "logits_from_hidden", "load_pretrained",
           "diffusion", "likelihood", "models", "objectives", "sampling"]
