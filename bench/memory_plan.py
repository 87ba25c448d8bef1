"""Memory plan of the MDU train step at full size, from compiled programs (no full-size arrays).

    python -m bench.memory_plan                      # LLaDA-8B and Dream-7B, shipped configs (~20 min, 2 cores)
    python -m bench.memory_plan --quick              # LLaDA-8B only, fewer setups
    python -m bench.memory_plan --markdown           # also print the README tables
    python -m bench.memory_plan --configs paper --setups shipped --devices 4 --shapes 1x256 1x1024 --no-breakdown
                                                     # the paper presets (configs/paper/, README "Reproduce the paper")

For each shipped config (configs/tofu_llada8b.yaml, configs/tofu_dream7b.yaml) with the full-size
architecture (tests/models/data/*_config.json), each mesh size (1, 4, 8 devices; FSDP as the
configs set it), each setup (the config as shipped; + float32 master weights; no gradient accumulation, i.e.
the effective batch as rows of one step; the same with the model passes' activations pinned to
the batch sharding (parallel.shard_activations); LoRA r=16 with the fused anchor pass, without
and with pinned activations; the plain baseline with no remat and no chunked loss) and each batch shape, the
train step is built exactly as ``python -m mdu_jax.train`` builds it, compiled with
``jax.jit(step).lower(abstract state, abstract anchor, abstract batch).compile()`` on fake CPU
devices, and ``memory_analysis()`` gives the per-device numbers (``mdu_jax.training.memory``):

  params / opt / anchor / batch   per-device input sizes from the compiled program's shardings
  temp                            XLA's temporaries: activations kept for the backward pass (what
                                  the remat policy saves), gradients, logits (what chunking bounds)
  peak                            arguments + outputs - donated aliases + temp

The numbers are XLA:CPU's buffer assignment for the same SPMD program: a proxy for GPU/TPU
(partitioning and stored state are identical; fusion and scratch buffers differ). On CPU the
bf16 configs are compiled with float16 in place of bfloat16 (same sizes; XLA:CPU would otherwise
add float32 copies of every bf16 weight, see ``mdu_jax.training.memory.cpu_proxy``); --no-f16-proxy
compiles bf16 as is. "Fits" means peak <= 90% of the device's HBM. A hand-formula cross-check of
the state sizes (params / opt / anchor) is printed too.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402

from mdu_jax.training import memory  # noqa: E402
from mdu_jax.training.config import load_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    "LLaDA-8B": ("configs/tofu_llada8b.yaml", "tests/models/data/llada_8b_instruct_config.json"),
    "Dream-7B": ("configs/tofu_dream7b.yaml", "tests/models/data/dream_v0_instruct_7b_config.json"),
}
# --configs paper: the paper presets (reference padding, max length 1024; configs/paper/).
PAPER_MODELS = {
    "LLaDA-8B": ("configs/paper/tofu_llada8b_forget10_mdu.yaml", MODELS["LLaDA-8B"][1]),
    "Dream-7B": ("configs/paper/tofu_dream7b_forget10_mdu.yaml", MODELS["Dream-7B"][1]),
}
SETUPS = {
    "shipped": [],
    "+fp32 master": ["optim.master_weights=true"],
    "grad_accum 1": ["optim.grad_accum=1"],
    "grad_accum 1, pinned act.": ["optim.grad_accum=1", "parallel.shard_activations=true"],
    "LoRA r16 fused": ["model.lora_rank=16", "model.fuse_anchor_pass=true"],
    "LoRA r16 fused, pinned act.": ["model.lora_rank=16", "model.fuse_anchor_pass=true",
                                    "parallel.shard_activations=true"],
    "no remat, no chunk": ["model.remat_policy=none", "objective.chunk_size=0"],
    # The reference's micro-batch is 4 rows: on 8 devices FSDP over 4 of the mesh axes and tensor
    # parallelism over 2 keeps it (rows/device then counts rows per FSDP shard).
    "fsdp4 x tensor2": ["parallel.mesh={data: 1, fsdp: 4, tensor: 2}"],
}
# name, devices (FSDP mesh), HBM per device in GiB
HARDWARE = [("1x H100 80GB", 1, 79.6), ("8x H100 80GB", 8, 79.6), ("TPU v4-8", 4, 32.0),
            ("TPU v5e-8", 8, 16.0), ("TPU v5p-8", 4, 95.0)]
SHAPES = [(1, 512), (4, 512)]   # (rows per device, sequence length); TOFU's longest bucket is 512


@dataclasses.dataclass
class Row:
    model: str
    setup: str
    rows_per_device: int
    seq: int
    mem: memory.StepMemory
    formula: dict


F16_PROXY = True
CONFIG_SET = "shipped"


def plan(model: str, setup: str, devices: int, rows_per_device: int, seq: int, overrides=(), layers=0) -> Row:
    """Compiles one case and returns its row."""
    yaml_path, hf_path = (PAPER_MODELS if CONFIG_SET == "paper" else MODELS)[model]
    cfg = load_config(os.path.join(ROOT, yaml_path), list(SETUPS.get(setup, [])) + list(overrides))
    if F16_PROXY and jax.default_backend() == "cpu":
        cfg = memory.cpu_proxy(cfg)
    hf = os.path.join(ROOT, hf_path)
    model_cfg = memory.model_config(cfg, hf)
    if layers:
        model_cfg = model_cfg.replace(num_layers=layers)
    mesh = memory.make_cpu_mesh(cfg, devices)
    mem = memory.step_memory(cfg, model_cfg, mesh, rows_per_device * memory_divisor(mesh), seq)
    return Row(model, setup, rows_per_device, seq, mem, memory.formula_state_bytes(cfg, model_cfg, devices))


def memory_divisor(mesh) -> int:
    from mdu_jax import parallel

    return parallel.batch_divisor(mesh)


def g(x) -> str:
    return f"{x / memory.GiB:.2f}"


def print_rows(rows: list[Row], out=sys.stdout) -> None:
    print(f"{'model':<9} {'setup':<28} {'dev':>3} {'rows/dev':>8} {'seq':>5} {'params':>7} {'opt':>7} "
          f"{'anchor':>7} {'temp':>7} {'peak':>7} {'formula p/o/a':>17} {'compile s':>9}", file=out)
    for r in rows:
        m, f = r.mem, r.formula
        print(f"{r.model:<9} {r.setup:<28} {m.devices:>3} {r.rows_per_device:>8} {r.seq:>5} {g(m.params):>7} "
              f"{g(m.opt_state):>7} {g(m.anchor):>7} {g(m.temp):>7} {g(m.peak):>7} "
              f"{g(f['params']) + '/' + g(f['opt_state']) + '/' + g(f['anchor']):>17} {m.compile_s:>9.1f}", file=out)


def fit_table(rows: list[Row], markdown: bool) -> str:
    """One line per (model, setup, shape); one column per hardware: peak GiB and whether it fits."""
    by_key = {(r.model, r.setup, r.rows_per_device, r.seq, r.mem.devices): r for r in rows}
    keys = sorted({(r.model, r.setup, r.rows_per_device, r.seq) for r in rows},
                  key=lambda k: (list(MODELS).index(k[0]), list(SETUPS).index(k[1]) if k[1] in SETUPS else 99,
                                 k[2], k[3]))
    head = ["model", "setup", "rows/device x seq"] + [f"{h} ({c:g} GiB)" for h, _, c in HARDWARE]
    lines = []
    for k in keys:
        cells = [k[0], k[1], f"{k[2]} x {k[3]}"]
        for _, n, cap in HARDWARE:
            r = by_key.get(k + (n,))
            if r is None:
                cells.append("-")
            else:
                ok = memory.fits(r.mem.peak, cap)
                cells.append(f"{'yes' if ok else 'no'} ({g(r.mem.peak)})")
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(out)
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [head] + lines)


def breakdown(model: str, devices: int, rows_per_device: int, seq: int, markdown: bool) -> str:
    """temp and peak of the shipped config under each remat policy x chunked / whole-sequence loss."""
    head = ["remat policy", "chunk", "temp GiB", "peak GiB"]
    lines = []
    for remat in ("none", "dots_no_batch", "save_attn_mlp_out", "full"):
        for chunk in (0, 128):
            r = plan(model, "shipped", devices, rows_per_device, seq,
                     [f"model.remat_policy={remat}", f"objective.chunk_size={chunk}"])
            lines.append([remat, str(chunk) if chunk else "whole", g(r.mem.temp), g(r.mem.peak)])
            print(f"  {model} {devices} dev {rows_per_device}x{seq}: remat={remat} chunk={chunk}: "
                  f"temp {g(r.mem.temp)} GiB, peak {g(r.mem.peak)} GiB ({r.mem.compile_s:.0f} s)", flush=True)
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                         + ["| " + " | ".join(c) + " |" for c in lines])
    return "\n".join("  ".join(c.ljust(14) for c in row) for row in [head] + lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--setups", nargs="*", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--devices", nargs="*", type=int, default=sorted({n for _, n, _ in HARDWARE}))
    p.add_argument("--shapes", nargs="*", default=[f"{r}x{t}" for r, t in SHAPES],
                   help="rows-per-device x seq, e.g. 1x512 4x512")
    p.add_argument("--quick", action="store_true", help="LLaDA-8B, shipped and LoRA setups, 1x512 only")
    p.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                   help="skip the remat x chunk table (8 more compilations)")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--no-f16-proxy", dest="f16_proxy", action="store_false",
                   help="on CPU, compile bfloat16 as is (XLA:CPU then adds float32 weight copies)")
    p.add_argument("--configs", choices=("shipped", "paper"), default="shipped",
                   help="shipped: configs/tofu_*.yaml; paper: configs/paper/tofu_*_forget10_mdu.yaml (the reference "
                        "protocol: visible padding to the longest row, max length 1024)")
    a = p.parse_args(argv)
    global F16_PROXY, CONFIG_SET
    F16_PROXY, CONFIG_SET = a.f16_proxy, a.configs
    if a.quick:
        a.models, a.setups, a.shapes, a.breakdown = ["LLaDA-8B"], ["shipped", "LoRA r16 fused"], ["1x512"], False
    shapes = [tuple(int(x) for x in s.split("x")) for s in a.shapes]
    proxy = " bf16 compiled as f16," if F16_PROXY and jax.default_backend() == "cpu" else ""
    print(f"backend: {jax.default_backend()} with {jax.device_count()} devices (XLA buffer assignment of the "
          f"compiled step; on CPU a proxy for GPU/TPU;{proxy} sizes in GiB per device)", flush=True)
    rows = []
    for model in a.models:
        for setup in a.setups:
            for n in a.devices:
                for rpd, seq in shapes:
                    r = plan(model, setup, n, rpd, seq)
                    rows.append(r)
                    print_rows([r])
                    sys.stdout.flush()
    print("\nAll cases:")
    print_rows(rows)
    print("\nWhich (mesh, batch, seq) fits: peak GiB per device; 'yes' if <= 90% of HBM. Meshes: FSDP over "
          "all devices of the machine (1x H100: 1 device; v4-8 and v5p-8: 4 chips; 8x H100 and v5e-8: 8).")
    print(fit_table(rows, a.markdown))
    if a.breakdown:
        model = a.models[0]
        print(f"\nActivations and logits: {model}, shipped config, 8 devices, 1 row/device x 512, "
              "temp under each remat policy and with / without the chunked loss:")
        print(breakdown(model, 8, 1, 512, a.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
