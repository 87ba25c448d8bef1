"""Peak host memory of `python -m checkpoints_convert` on a synthetic >= 2 GB LLaDA-layout checkpoint.

Builds a wide, shallow LLaDA checkpoint (LLaDA-8B's layer width: d_model 4096, mlp 12288, but
4 layers and a 32k vocabulary: 1.13 B params, 2.27 GB in bf16) tensor by tensor with the
streaming safetensors writer, as 1 GB shards plus an index. Then runs each conversion in its
own process and reads its peak resident set size from ``os.wait4`` (the kernel's high-water
mark, file-backed mapped pages included), via a small launcher so that this process's own
memory is not inherited into the number. The target from issue 3 is
``peak RSS <= 1.3 x checkpoint bytes + 1 GB``. The `naive` row (``--baseline``) loads the
whole model with ``load_pretrained`` and saves it with orbax, the materialising approach the
streaming converter avoids. Export output is checked bit for bit against the source.

    python bench/convert_memory.py [--workdir DIR] [--layers 4] [--baseline] [--keep]

Needs about 3x the checkpoint size of free disk (5x with --baseline); files are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

GB = 10**9


def build_checkpoint(folder: str, layers: int, hidden: int, mlp: int, vocab: int, shard_bytes: int) -> int:
    """Writes a random bf16 LLaDA-layout HF folder one tensor at a time; returns its tensor bytes."""
    from mdu_jax.models import hf_tensors
    from mdu_jax.models.config import ModelConfig
    from mdu_jax.checkpoints.safetensors_io import DTYPES, INDEX_FILE, SafetensorsWriter

    cfg = ModelConfig(family="llada", vocab_size=vocab, hidden_size=hidden, num_layers=layers,
                      num_heads=hidden // 128, num_kv_heads=hidden // 128, head_dim=128, intermediate_size=mlp,
                      rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, qkv_bias=False,
                      mask_token_id=vocab - 1, eos_token_id=1, pad_token_id=1)
    os.makedirs(folder)
    hf_config = cfg.to_hf()
    hf_config["torch_dtype"] = "bfloat16"
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    table = hf_tensors(cfg)
    bf16 = DTYPES["BF16"]
    groups, size = [[]], 0
    for t in table:
        nbytes = int(np.prod(t.shape)) * 2
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += nbytes
    rng = np.random.default_rng(0)
    weight_map, total = {}, 0
    for k, group in enumerate(groups):
        name = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        with SafetensorsWriter(os.path.join(folder, name), [(t.name, t.shape, "BF16") for t in group],
                               metadata={"format": "pt"}) as w:
            for t in group:
                if t.name.endswith("norm.weight") or ".ln_f." in t.name:
                    value = np.ones(t.shape, bf16)
                else:
                    value = (0.02 * rng.standard_normal(t.shape, np.float32)).astype(bf16)
                w.write(t.name, value)
                weight_map[t.name] = name
                total += value.nbytes
                del value
    with open(os.path.join(folder, INDEX_FILE), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return total


# Linux carries a process's RSS high-water mark across fork/vfork + exec, so a child started
# by this (large) process would report at least our own peak. A fresh, small launcher starts
# the measured command and reports that grandchild's rusage instead.
LAUNCHER = """
import json, os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = p.stderr.read()
_, status, usage = os.wait4(p.pid, 0)
sys.stderr.write(err.decode()[-3000:])
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss}))
"""


def run_measured(argv: list[str], timeout: float | None = None) -> tuple[int, float]:
    """(peak RSS in bytes, wall seconds) of a command run in its own process; raises if it fails
    (or, with `timeout` seconds, if it runs longer)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - start
    result = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"code": -1}
    if result["code"] != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result['code']}):\n{done.stderr[-3000:]}")
    return result["maxrss_kb"] * 1024, wall  # Linux reports kilobytes


def same_tensors(a: str, b: str) -> bool:
    """True when two HF folders hold the same tensor names, dtypes and bytes (read one at a time)."""
    from mdu_jax.checkpoints.safetensors_io import CheckpointReader

    ra, rb = CheckpointReader(a), CheckpointReader(b)
    if sorted(ra.names()) != sorted(rb.names()):
        return False
    for name in ra.names():
        if ra.dtype(name) != rb.dtype(name) or not np.array_equal(ra.get(name).view(np.uint16),
                                                                   rb.get(name).view(np.uint16)):
            return False
    return True


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=None, help="where to build the checkpoints (default: a new folder in /tmp)")
    p.add_argument("--layers", type=int, default=4, help="number of layers (default 4: 2.27 GB)")
    p.add_argument("--hidden", type=int, default=4096, help="d_model (default 4096)")
    p.add_argument("--mlp", type=int, default=12288, help="mlp_hidden_size (default 12288)")
    p.add_argument("--vocab", type=int, default=32000, help="vocabulary size (default 32000)")
    p.add_argument("--baseline", action="store_true", help="also measure the naive load-everything-then-save path")
    p.add_argument("--keep", action="store_true", help="keep the files")
    args = p.parse_args(argv)

    work = tempfile.mkdtemp(prefix="convert_memory_", dir=args.workdir)
    hf, ckpt, out = (os.path.join(work, n) for n in ("hf", "ckpt", "out"))
    py = sys.executable
    rows = []
    try:
        t0 = time.perf_counter()
        ckpt_bytes = build_checkpoint(hf, args.layers, args.hidden, args.mlp, args.vocab, shard_bytes=GB)
        print(f"built {hf}: {ckpt_bytes / GB:.2f} GB of bf16 tensors in {time.perf_counter() - t0:.0f} s",
              flush=True)
        idle, _ = run_measured([py, "-c", "import checkpoints_convert, orbax.checkpoint, tensorstore"])
        rows.append(("python + imports only", idle, None, "-"))

        rss, wall = run_measured([py, "-m", "checkpoints_convert", "import", "--src", hf, "--dst", ckpt,
                                  "--no-progress"])
        rows.append(("import bf16 -> bf16", rss, wall, f"{folder_bytes(ckpt) / GB:.2f} GB written"))
        rss, wall = run_measured([py, "-m", "checkpoints_convert", "export", "--src", ckpt, "--dst", out,
                                  "--no-progress"])
        exact = same_tensors(hf, out)
        rows.append(("export bf16 -> HF bf16", rss, wall, f"bit-exact: {exact}"))
        shutil.rmtree(out)
        shutil.rmtree(ckpt)
        rss, wall = run_measured([py, "-m", "checkpoints_convert", "import", "--src", hf, "--dst", ckpt,
                                  "--dtype", "fp32", "--no-progress"])
        rows.append(("import bf16 -> fp32", rss, wall, f"{folder_bytes(ckpt) / GB:.2f} GB written"))
        shutil.rmtree(ckpt)
        if args.baseline:
            code = ("import sys, mdu_jax as mj; from mdu_jax import checkpoints as c; "
                    "cfg, p, _ = mj.load_pretrained(sys.argv[1], param_dtype='bfloat16', tokenizer=False); "
                    "c.save_params(sys.argv[2], p)")
            rss, wall = run_measured([py, "-c", code, hf, ckpt])
            rows.append(("naive: load_pretrained + orbax save", rss, wall, "materialises the model"))
            shutil.rmtree(ckpt)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    target = 1.3 * ckpt_bytes + GB
    print(f"\ncheckpoint: {ckpt_bytes / GB:.2f} GB ({args.layers} layers, d_model {args.hidden}, mlp {args.mlp}, "
          f"vocab {args.vocab}); target peak RSS <= 1.3 x ckpt + 1 GB = {target / GB:.2f} GB\n")
    print(f"{'step':<38}{'peak RSS GB':>12}{'RSS/ckpt':>10}{'<= target':>11}{'wall s':>8}  note")
    for name, rss, wall, note in rows:
        ok = "yes" if rss <= target else "NO"
        wall_s = f"{wall:.1f}" if wall is not None else "-"
        print(f"{name:<38}{rss / GB:>12.2f}{rss / ckpt_bytes:>10.2f}{ok:>11}{wall_s:>8}  {note}")
    return 0 if all(r[1] <= target for r in rows if not r[0].startswith("naive")) else 1


if __name__ == "__main__":
    sys.exit(main())
