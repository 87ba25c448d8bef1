"""Checkpoints: HF safetensors folders (read, export), converted orbax params folders,
``load_pretrained`` for both, and whole-or-nothing writes.

    cfg, params, tokenizer = load_pretrained("hf_dir_or_converted")     # optional shardings=...
    export_params(cfg, params, "hf_out", like="hf_dir")                  # arrays -> HF folder
    export_checkpoint("converted", "hf_out", like="hf_dir")              # converted -> HF folder

The training run's own checkpoints (train state, anchor) are ``mdu_jax.training.checkpointing``.
"""

from mdu_jax.checkpoints.atomic_write import atomic_output_dir, write_bytes, write_text
from mdu_jax.checkpoints.errors import CheckpointError, ConversionError
from mdu_jax.checkpoints.folder_files import parse_size
from mdu_jax.checkpoints.hf_export import export_checkpoint, export_params, plan_shards
from mdu_jax.checkpoints.orbax_params import (is_converted_checkpoint, load_converted, restore_params,
                                              save_params)
from mdu_jax.checkpoints.pretrained import load_pretrained

__all__ = ["atomic_output_dir", "write_bytes", "write_text", "CheckpointError", "ConversionError", "parse_size",
           "export_checkpoint", "export_params", "plan_shards", "is_converted_checkpoint", "load_converted",
           "restore_params", "save_params", "load_pretrained"]
