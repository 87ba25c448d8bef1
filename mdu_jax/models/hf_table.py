"""The HF <-> mdu_jax tensor name map: one row per checkpoint tensor (data, used by loading,
the converter and export in both directions)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: the config module imports the family tables
    from mdu_jax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class HFTensor:
    """One tensor of a HF checkpoint and where it lives in the mdu_jax params.

    ``layer`` is the index into the stacked leading axis (None for unstacked params);
    ``transpose`` says the HF tensor is a PyTorch Linear weight [out, in] that mdu_jax stores
    as [in, out] (then reshaped into heads where the param has a head axis).
    """

    name: str
    shape: tuple[int, ...]
    path: tuple[str, ...]
    layer: int | None
    transpose: bool

    def to_hf(self, array: np.ndarray) -> np.ndarray:
        """One mdu_jax slice -> the HF array of shape ``self.shape``."""
        if self.transpose:
            return np.ascontiguousarray(array.reshape(self.shape[1], self.shape[0]).T)
        return np.ascontiguousarray(array.reshape(self.shape))


def block_shapes(cfg: "ModelConfig") -> dict[tuple[str, str], tuple[int, ...]]:
    """The PyTorch shape ([out, in] for Linear weights) of each decoder-block tensor, by its param
    path below ``layers``; the same in both families, only the names differ."""
    D, H, K, h, F = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    return {("attn_norm", "scale"): (D,), ("mlp_norm", "scale"): (D,),
            ("q", "kernel"): (H * h, D), ("k", "kernel"): (K * h, D), ("v", "kernel"): (K * h, D),
            ("q", "bias"): (H * h,), ("k", "bias"): (K * h,), ("v", "bias"): (K * h,),
            ("o", "kernel"): (D, H * h), ("gate", "kernel"): (F, D), ("up", "kernel"): (F, D),
            ("down", "kernel"): (D, F)}


def stacked_table(cfg: "ModelConfig", *, embedding: str, block_prefix: str, block: dict[str, tuple[str, str]],
                  final_norm: str, lm_head: str) -> list[HFTensor]:
    """The table of a checkpoint laid out as embedding, ``num_layers`` blocks, final norm and, when
    untied, the LM head [V, D]. `block` maps each block tensor's name suffix (``{block_prefix}.{i}.``
    comes before it) to its param path below ``layers``, in file order; kernels are Linear weights
    (transposed), norm scales and biases are not."""
    D, V = cfg.hidden_size, cfg.vocab_size
    shapes = block_shapes(cfg)
    table = [HFTensor(embedding, (V, D), ("embed", "embedding"), None, False)]
    for i in range(cfg.num_layers):
        table += [HFTensor(f"{block_prefix}.{i}.{suffix}", shapes[path], ("layers",) + path, i, path[-1] == "kernel")
                  for suffix, path in block.items()]
    table.append(HFTensor(final_norm, (D,), ("final_norm", "scale"), None, False))
    if not cfg.tie_word_embeddings:
        table.append(HFTensor(lm_head, (V, D), ("lm_head", "kernel"), None, True))
    return table
