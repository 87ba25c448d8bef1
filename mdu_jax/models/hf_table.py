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


# One row of a decoder block: (name suffix, HF shape, param path, transpose).
BlockRow = tuple[str, tuple[int, ...], tuple[str, ...], bool]


def stacked_table(cfg: "ModelConfig", *, embedding: str, block_prefix: str, block: list[BlockRow],
                  final_norm: str, lm_head: str) -> list[HFTensor]:
    """The table of a checkpoint laid out as embedding, ``num_layers`` blocks
    (``{block_prefix}.{i}.{suffix}``), final norm and, when untied, the LM head [V, D]."""
    D, V = cfg.hidden_size, cfg.vocab_size
    table = [HFTensor(embedding, (V, D), ("embed", "embedding"), None, False)]
    for i in range(cfg.num_layers):
        table += [HFTensor(f"{block_prefix}.{i}.{suffix}", shape, path, i, transpose)
                  for suffix, shape, path, transpose in block]
    table.append(HFTensor(final_norm, (D,), ("final_norm", "scale"), None, False))
    if not cfg.tie_word_embeddings:
        table.append(HFTensor(lm_head, (V, D), ("lm_head", "kernel"), None, True))
    return table
