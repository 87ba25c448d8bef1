"""Convert LLaDA / Dream checkpoints between PyTorch HF folders and mdu_jax, streaming.

    python -m checkpoints_convert import --src HF_DIR --dst CKPT_DIR [--dtype bf16|fp32]
    python -m checkpoints_convert export --src CKPT_DIR --dst HF_DIR [--like ORIGINAL_HF_DIR]

Python API::

    import_checkpoint(src, dst, dtype=None, overwrite=False, progress=True)        # HF -> mdu_jax
    export_checkpoint(src, dst, like=None, max_shard_size="5GB", dtype=None, ...)   # mdu_jax -> HF
    export_params(cfg, params, dst, like=None, ...)                                # arrays -> HF

A converted checkpoint loads with ``mdu_jax.load_pretrained(CKPT_DIR, shardings=...)``. Export is
``mdu_jax.checkpoints.export_checkpoint`` / ``export_params`` (a training run writes its final HF
folder with the latter); this package adds the import direction and the command line.
Every function validates before writing, writes into a temporary folder beside `dst` and
renames it into place only when complete; errors are ``mdu_jax.CheckpointError`` /
``mdu_jax.ConfigError`` naming the file and tensor at fault.
"""

from checkpoints_convert.importer import import_checkpoint
from mdu_jax.checkpoints import ConversionError, atomic_output_dir, export_checkpoint, export_params, parse_size

__all__ = ["import_checkpoint", "export_checkpoint", "export_params", "ConversionError", "atomic_output_dir",
           "parse_size"]
