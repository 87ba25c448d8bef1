"""mdu-jax: machine unlearning for masked diffusion language models (LLaDA, Dream) in JAX.

Public API::

    cfg = mdu_jax.ModelConfig.from_hf("hf_dir")            # or a config.json dict
    params = mdu_jax.init_params(cfg, jax.random.key(0))   # nested-dict pytree
    logits = mdu_jax.forward(cfg, params, input_ids, attention_mask=None)   # [B, T, V]
    cfg, params, tokenizer = mdu_jax.load_pretrained("hf_dir_or_checkpoint")
    mdu_jax.objectives.mdu_loss(...), mdu_jax.diffusion.mdlm_loss(...), mdu_jax.sampling.generate(...)
"""

import importlib

from mdu_jax.models.config import ConfigError, ModelConfig
from mdu_jax.models.params import abstract_params, init_params, logical_axes
from mdu_jax.models.safetensors_io import CheckpointError
from mdu_jax.models.transformer import forward, hidden_states, logits_from_hidden
from mdu_jax.pretrained import load_pretrained

_SUBMODULES = {"diffusion", "objectives", "sampling", "likelihood", "data", "parallel", "checkpoint",
               "train", "evaluate", "metrics", "models", "tokenizer", "configs", "demo"}

__version__ = "0.1.0"


def __getattr__(name):
    # Submodules load on first use: `import mdu_jax` stays light and has no import cycles.
    if name in _SUBMODULES:
        return importlib.import_module(f"mdu_jax.{name}")
    raise AttributeError(f"module 'mdu_jax' has no attribute {name!r}")


__all__ = ["ModelConfig", "ConfigError", "CheckpointError", "init_params", "abstract_params",
           "logical_axes", "forward", "hidden_states", "logits_from_hidden", "load_pretrained"]
