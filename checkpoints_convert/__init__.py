"""Convert LLaDA / Dream checkpoints between PyTorch HF folders and mdu_jax, streaming.

    python -m checkpoints_convert import --src HF_DIR --dst CKPT_DIR [--dtype bf16|fp32]
    python -m checkpoints_convert export --src CKPT_DIR --dst HF_DIR [--like ORIGINAL_HF_DIR]

Python API::

    import_checkpoint(src, dst, dtype=None, overwrite=False, progress=True)        # HF -> mdu_jax
    export_checkpoint(src, dst, like=None, max_shard_size="5GB", dtype=None, ...)   # mdu_jax -> HF
    export_params(cfg, params, dst, like=None, ...)                                # arrays -> HF

A converted checkpoint loads with ``mdu_jax.load_pretrained(CKPT_DIR, shardings=...)``.
Every function validates before writing, writes into a temporary folder beside `dst` and
renames it into place only when complete; errors are ``mdu_jax.CheckpointError`` /
``mdu_jax.ConfigError`` naming the file and tensor at fault.
"""

from checkpoints_convert.atomic import ConversionError, atomic_output_dir
from checkpoints_convert.exporter import export_checkpoint, export_params
from checkpoints_convert.files import parse_size
from checkpoints_convert.importer import import_checkpoint

__all__ = ["import_checkpoint", "export_checkpoint", "export_params", "ConversionError", "atomic_output_dir",
           "parse_size"]
