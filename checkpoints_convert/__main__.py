"""``python -m checkpoints_convert {import,export}``: the command-line face of the converter."""

from __future__ import annotations

import argparse
import signal
import sys

from checkpoints_convert.importer import import_checkpoint
from mdu_jax.checkpoints import CheckpointError, export_checkpoint
from mdu_jax.models.config import ConfigError

DTYPE_CHOICES = ("bf16", "fp32", "fp16", "bfloat16", "float32", "float16")

DESCRIPTION = """\
Convert LLaDA / Dream checkpoints between HF PyTorch folders and mdu_jax, one tensor at a time
(host memory stays near the largest tensor, not the model).

  import  HF folder (config.json + model.safetensors or model.safetensors.index.json + shards,
          tokenizer files, generation_config.json, remote-code *.py) -> mdu_jax checkpoint
          (orbax params + the same config and files), loadable with
          mdu_jax.load_pretrained(CKPT_DIR, shardings=...).
  export  mdu_jax checkpoint -> HF folder with the original tensor names, shapes and dtypes,
          sharded safetensors + model.safetensors.index.json, config and tokenizer files.

Output is built in a temporary folder beside --dst and renamed into place only when complete;
a failed or interrupted run leaves no --dst. Inputs are validated first (config model_type,
index and shards, tensor names, shapes and dtypes); errors name the file and tensor."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m checkpoints_convert", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{import,export}")

    imp = sub.add_parser("import", help="HF folder -> mdu_jax checkpoint",
                         description="Convert an HF LLaDA/Dream folder into an mdu_jax checkpoint.")
    imp.add_argument("--src", required=True, metavar="HF_DIR",
                     help="HF checkpoint folder: config.json (model_type 'llada' or 'Dream') and "
                          "model.safetensors or model.safetensors.index.json + shards")
    imp.add_argument("--dst", required=True, metavar="CKPT_DIR",
                     help="mdu_jax checkpoint folder to create (must not exist unless --overwrite)")
    imp.add_argument("--dtype", choices=DTYPE_CHOICES, default=None,
                     help="stored parameter dtype (default: keep the source's; the widest one if tensors differ)")
    _common(imp)

    exp = sub.add_parser("export", help="mdu_jax checkpoint -> HF folder",
                         description="Write an mdu_jax checkpoint back as an HF LLaDA/Dream folder.")
    exp.add_argument("--src", required=True, metavar="CKPT_DIR", help="mdu_jax checkpoint folder (from `import`)")
    exp.add_argument("--dst", required=True, metavar="HF_DIR",
                     help="HF folder to create (must not exist unless --overwrite)")
    exp.add_argument("--like", metavar="ORIGINAL_HF_DIR", default=None,
                     help="the original HF folder: copy its config.json, remote-code *.py, tokenizer and other "
                          "non-weight files (so trust_remote_code loading works) and keep its tensor dtypes; "
                          "it must describe the same architecture")
    exp.add_argument("--max-shard-size", default="5GB", metavar="SIZE",
                     help="largest safetensors file, e.g. 5GB (default), 500MB, 2GiB or a byte count; "
                          "one file (no index) when everything fits")
    exp.add_argument("--dtype", choices=DTYPE_CHOICES, default=None,
                     help="cast every tensor to this dtype (default: each tensor's original dtype)")
    _common(exp)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --dst (only after the new folder is complete)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="do not show the progress bar (bytes and tensors written)")


def _terminate(signum, frame):
    # SIGTERM unwinds like Ctrl-C, so the temporary output folder is removed.
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    """Runs the CLI; returns the exit status (0 ok, 1 conversion error, 2 usage error)."""
    args = build_parser().parse_args(argv)
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        if args.command == "import":
            out = import_checkpoint(args.src, args.dst, dtype=args.dtype, overwrite=args.overwrite,
                                    progress=args.progress)
        else:
            out = export_checkpoint(args.src, args.dst, like=args.like, max_shard_size=args.max_shard_size,
                                    dtype=args.dtype, overwrite=args.overwrite, progress=args.progress)
    except (CheckpointError, ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
