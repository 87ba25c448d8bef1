"""The LLaDA and Dream networks as pure functions of (config, params, inputs), their parameter
tables, HF name maps and LoRA adapters."""

from mdu_jax.models import dream, llada
from mdu_jax.models.config import ConfigError, ModelConfig
from mdu_jax.models.hf_table import HFTensor
from mdu_jax.models.params import abstract_params, count_params, init_params, logical_axes, param_specs
from mdu_jax.models.transformer import forward, hidden_states, lm_head_kernel, logits_from_hidden

HF_TABLES = {"llada": llada.hf_tensors, "dream": dream.hf_tensors}


def hf_tensors(cfg: ModelConfig) -> list[HFTensor]:
    """The checkpoint tensor table (names, HF shapes, param paths) of `cfg`'s family."""
    return HF_TABLES[cfg.family](cfg)


__all__ = ["ConfigError", "ModelConfig", "HFTensor", "abstract_params", "count_params", "init_params",
           "logical_axes", "param_specs", "forward", "hidden_states", "lm_head_kernel",
           "logits_from_hidden", "hf_tensors"]
