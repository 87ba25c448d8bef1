"""LLaDA and Dream as Flax NNX modules (one decoder block, one stack; the family is in the
config), the functional API over their pure-dict params, the parameter table, HF name maps and
the LoRA wrapper."""

from mdu_jax.models import dream, llada
from mdu_jax.models.block import DecoderBlock
from mdu_jax.models.config import ConfigError, ModelConfig
from mdu_jax.models.hf_table import HFTensor
from mdu_jax.models.lora import LoraSpec, LoraTransformer
from mdu_jax.models.params import abstract_params, count_params, init_params, logical_axes, param_specs
from mdu_jax.models.transformer import (Transformer, forward, hidden_states, lm_head_kernel, logits_from_hidden,
                                        model_from_params)

HF_TABLES = {"llada": llada.hf_tensors, "dream": dream.hf_tensors}


def hf_tensors(cfg: ModelConfig) -> list[HFTensor]:
    """The checkpoint tensor table (names, HF shapes, param paths) of `cfg`'s family."""
    return HF_TABLES[cfg.family](cfg)


__all__ = ["ConfigError", "ModelConfig", "HFTensor", "Transformer", "DecoderBlock", "LoraSpec", "LoraTransformer",
           "abstract_params", "count_params", "init_params", "logical_axes", "param_specs", "forward",
           "hidden_states", "lm_head_kernel", "logits_from_hidden", "model_from_params", "hf_tensors"]
