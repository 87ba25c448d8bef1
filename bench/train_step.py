"""The MDU train step: compile time, step time, tokens/s and MFU; JAX vs PyTorch side by side.

    python -m bench.train_step                       # tiny LLaDA-layout model, CPU, fp32, vs PyTorch
    python -m bench.train_step --preset 1b --dtype bfloat16 --no-torch        # accelerator runs
    python -m bench.train_step --preset 8b-layer --layers 2 --batch 4 --seq 1024 --no-torch
    python -m bench.train_step --suite               # the prepared MFU run: 1B and 8B-layer shapes,
                                                     # best settings (bf16, cuDNN attention, ...)
    python -m bench.train_step --suite --layers 1 --batch 2 --seq 64   # the same, tiny, on CPU

One MDU step = the conditional pass with gradient over the whole (forget + retain) batch, the
frozen anchor's forward over the prompt-masked batch, the KL + lambda x retain loss, AdamW.
Model FLOPs count that work: 3 x forward (conditional forward + backward) + 1 x forward (anchor)
per token, with forward FLOPs per token = 2 x (matmul parameters, LM head included) +
4 x layers x T x heads x head_dim (full, non-causal attention). With --lora the base weights get
no gradient, so the count is 2 x forward (conditional forward + input gradients) + 1 x forward
(anchor); the adapters' own FLOPs are not counted. Recomputation (remat, the chunked loss's
logits) is never counted: it is the price of memory, not model FLOPs. MFU is against `--peak-tflops`
(defaults per device kind) or, on CPU, against the measured float32 matmul throughput of this
machine (so "MFU" there means "fraction of what XLA's matmul reaches here").

The PyTorch twin runs the same step with transformers' LlamaForCausalLM(is_causal=False) holding
the same weights (an independent implementation of the same arithmetic) on the same batch.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

# Use the accelerator when there is one (JAX's default); --platform cpu forces the host.
# GPU: let XLA use most of the memory instead of the default 75% preallocation.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mdu_jax as mj  # noqa: E402
from mdu_jax.models import lora as lora_lib  # noqa: E402
from mdu_jax.training.config import ObjectiveSection, OptimSection  # noqa: E402
from mdu_jax.training.loss import make_loss_fn  # noqa: E402
from mdu_jax.training.optimizer import make_optimizer  # noqa: E402
from mdu_jax.training.state import init_state  # noqa: E402
from mdu_jax.training.step import make_step  # noqa: E402

PRESETS = {
    # name: (hidden, layers, heads, kv_heads, mlp, vocab)
    "tiny": (256, 4, 4, 4, 688, 4096),
    "1b": (2048, 16, 16, 16, 5504, 126464),
    "8b-layer": (4096, 32, 32, 32, 12288, 126464),   # LLaDA-8B's layer shape
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "TPU v4": 275.0, "TPU v5 lite": 197.0,
               "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v6": 918.0}


def model_config(args) -> mj.ModelConfig:
    d, layers, heads, kv, mlp, vocab = PRESETS[args.preset]
    layers = args.layers or layers
    return mj.ModelConfig(family="llada", vocab_size=vocab, hidden_size=d, num_layers=layers, num_heads=heads,
                          num_kv_heads=kv, head_dim=d // heads, intermediate_size=mlp, rope_theta=500000.0,
                          rms_norm_eps=1e-5, tie_word_embeddings=False, qkv_bias=False, mask_token_id=vocab - 1,
                          eos_token_id=1, pad_token_id=1, param_dtype=args.param_dtype, dtype=args.dtype,
                          remat_policy=args.remat, attention_impl=args.attention)


def forward_flops_per_token(cfg: mj.ModelConfig, T: int) -> float:
    d, h = cfg.hidden_size, cfg.num_heads * cfg.head_dim
    kv = cfg.num_kv_heads * cfg.head_dim
    matmul = cfg.num_layers * (d * h * 2 + d * kv * 2 + 3 * d * cfg.intermediate_size) + d * cfg.vocab_size
    attention = 4 * cfg.num_layers * T * h
    return 2.0 * matmul + attention


def make_batch(cfg, B, T, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, cfg.vocab_size - 1, size=(B, T)).astype(np.int32)
    prompt = T // 4
    maskable = np.zeros((B, T), bool)
    maskable[:, prompt:] = True
    return {"input_ids": ids, "maskable": maskable, "attention_mask": np.ones((B, T), np.int32),
            "is_forget": np.arange(B) % 2 == 0}


def measured_cpu_peak_tflops(n=2048, reps=5) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(reps):
        f(a).block_until_ready()
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e12


def peak_tflops(args) -> tuple[float, str]:
    if args.peak_tflops:
        return args.peak_tflops, "given"
    kind = jax.devices()[0].device_kind
    for name, value in PEAK_TFLOPS.items():
        if name.lower() in kind.lower():
            return value, f"{kind} bf16 dense peak"
    return measured_cpu_peak_tflops(), f"{kind}: measured fp32 matmul"


# The settings the --suite runs: bf16 everywhere, cuDNN flash attention where available, no
# recomputation of the layers, the loss in 256-position chunks (whole-sequence fp32 logits over the
# 126k vocabulary would take ~40 GiB at these shapes; recomputing the LM head in the backward pass
# costs a few % of the step), bf16 weights updated directly as in the reference. Sized with
# mdu_jax.training.memory on CPU (XLA attention, i.e. without cuDNN's savings): 1b ~78 GiB at batch 16, so
# batch 8; 8b-layer ~45 GiB. If a card runs out of memory, add --remat dots_no_batch.
BEST = dict(dtype="bfloat16", param_dtype="bfloat16", anchor_dtype="bfloat16", attention="auto", remat="none",
            chunk=256, master_weights=False)
# (preset, layers, batch, seq): a 1B-class model, and LLaDA-8B's layer shape with 4 layers (the
# full 32 layers do not fit one card for full fine-tuning; see bench/memory_plan.py).
SUITE = [("1b", 16, 8, 1024), ("8b-layer", 4, 8, 1024)]


def time_jax(cfg, batch, args):
    obj = ObjectiveSection(method="mdu", tau=args.tau, retain_weight=1.0, chunk_size=args.chunk)
    tx, _ = make_optimizer(OptimSection(lr=1e-5, warmup_ratio=0.0, schedule="constant",
                                        master_weights=args.master_weights), 100)
    spec = lora_lib.LoraSpec(args.lora, 2.0 * args.lora) if args.lora else None
    loss_fn = make_loss_fn(cfg, obj, lora=spec, fuse_anchor_pass=args.fuse)
    params = jax.jit(lambda k: mj.init_params(cfg, k))(jax.random.key(0))
    anchor = jax.tree.map(lambda p: p.astype(jnp.dtype(args.anchor_dtype)), params)
    if spec is not None:  # the base is the anchor; the trainable params are the adapters
        params = jax.jit(lambda k: lora_lib.init_adapters(cfg, spec, k, cfg.weight_dtype))(jax.random.key(1))
    state = jax.jit(lambda p: init_state(p, tx, 0))(params)
    step = jax.jit(make_step(loss_fn, tx), donate_argnums=(0,))
    device_batch = jax.device_put(batch)
    t0 = time.perf_counter()
    compiled = step.lower(state, anchor, device_batch).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state, anchor, device_batch)
    jax.block_until_ready(m)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        state, m = compiled(state, anchor, device_batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    mem = compiled.memory_analysis()
    peak_mem = None
    if mem is not None:
        peak_mem = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes) / 2 ** 30
    return compile_s, float(np.median(times)), float(m["loss"]), peak_mem, params


def time_torch(cfg, batch, params, args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(os.cpu_count() or 1)
    config = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                         intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
                         num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                         rms_norm_eps=cfg.rms_norm_eps, rope_theta=cfg.rope_theta, tie_word_embeddings=False,
                         is_causal=False, attn_implementation="sdpa")
    model = LlamaForCausalLM(config)
    # Same weights as the JAX model (via the LLaDA export table, renamed to Llama's names).
    state = {}
    p = jax.device_get(params)
    rename = {"embed/embedding": ("model.embed_tokens.weight", False), "final_norm/scale": ("model.norm.weight", False),
              "lm_head/kernel": ("lm_head.weight", True)}
    for key, (name, transpose) in rename.items():
        a, b = key.split("/")
        x = np.asarray(p[a][b], np.float32)
        state[name] = torch.from_numpy(np.ascontiguousarray(x.T if transpose else x))
    per_layer = {"attn_norm": ("input_layernorm.weight", None), "q": ("self_attn.q_proj.weight", "in"),
                 "k": ("self_attn.k_proj.weight", "in"), "v": ("self_attn.v_proj.weight", "in"),
                 "o": ("self_attn.o_proj.weight", "out"), "mlp_norm": ("post_attention_layernorm.weight", None),
                 "gate": ("mlp.gate_proj.weight", "mat"), "up": ("mlp.up_proj.weight", "mat"),
                 "down": ("mlp.down_proj.weight", "mat")}
    for i in range(cfg.num_layers):
        for key, (name, kind) in per_layer.items():
            leaf = p["layers"][key]["scale" if kind is None else "kernel"][i]
            x = np.asarray(leaf, np.float32)
            if kind == "in":
                x = x.reshape(x.shape[0], -1).T
            elif kind == "out":
                x = x.reshape(-1, x.shape[-1]).T
            elif kind == "mat":
                x = x.T
            state[f"model.layers.{i}.{name}"] = torch.from_numpy(np.ascontiguousarray(x))
    model.load_state_dict(state, strict=False)
    anchor = copy.deepcopy(model).eval()
    for q in anchor.parameters():
        q.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    ids = torch.from_numpy(batch["input_ids"]).long()
    maskable = torch.from_numpy(batch["maskable"])
    is_forget = torch.from_numpy(batch["is_forget"])
    mask_id = cfg.mask_token_id
    gen = torch.Generator().manual_seed(0)

    def step():
        B, T = ids.shape
        t = 1e-3 + (1 - 1e-3) * torch.rand(B, generator=gen)
        masked = (torch.rand(B, T, generator=gen) < t[:, None]) & maskable
        noised = torch.where(masked, torch.full_like(ids, mask_id), ids)
        uncond = torch.where(maskable, noised, torch.full_like(ids, mask_id))
        logits = model(input_ids=noised).logits.float()
        with torch.no_grad():
            anchor_logits = anchor(input_ids=uncond).logits.float()
        logp = torch.log_softmax(logits, -1)
        logq = torch.log_softmax(args.tau * anchor_logits, -1)
        kl = (logp.exp() * (logp - logq)).sum(-1)
        fm = masked & is_forget[:, None]
        rm = masked & ~is_forget[:, None]
        forget = (kl * fm).sum() / fm.sum().clamp(min=1)
        ce = -logp.gather(-1, ids[..., None])[..., 0] / t[:, None]
        retain = (ce * rm).sum() / (maskable & ~is_forget[:, None]).sum().clamp(min=1)
        loss = forget + retain
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss)

    step()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--layers", type=int, default=0, help="override the preset's layer count")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--dtype", default="float32", help="compute dtype")
    p.add_argument("--param-dtype", dest="param_dtype", default="float32")
    p.add_argument("--anchor-dtype", dest="anchor_dtype", default=None)
    p.add_argument("--remat", default="none")
    p.add_argument("--attention", default="xla", help="xla | cudnn | auto")
    p.add_argument("--chunk", type=int, default=0, help="loss chunk size over the sequence (0: whole)")
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--peak-tflops", dest="peak_tflops", type=float, default=0.0)
    p.add_argument("--no-torch", dest="torch", action="store_false", help="skip the PyTorch comparison")
    p.add_argument("--master-weights", dest="master_weights", action="store_true",
                   help="float32 master weights and moments (optim.master_weights)")
    p.add_argument("--lora", type=int, default=0, help="train rank-r LoRA adapters on every projection (0: off)")
    p.add_argument("--fuse", action="store_true", help="with --lora: one layer stack for both MDU passes")
    p.add_argument("--suite", action="store_true",
                   help="the prepared MFU run: presets 1b and 8b-layer with the best settings (BEST); "
                        "--layers/--batch/--seq given explicitly override every suite entry")
    p.add_argument("--platform", default=None, help="cpu | gpu | tpu (default: JAX's choice)")
    args = p.parse_args(argv)
    if args.platform:
        jax.config.update("jax_platforms", args.platform)
    if args.fuse and not args.lora:
        p.error("--fuse needs --lora")
    if args.suite:
        return run_suite(p, argv)
    return bench(args)


def bench(args) -> dict:
    """Times one configuration (parsed arguments) and prints its table; returns the numbers."""
    args.anchor_dtype = args.anchor_dtype or args.param_dtype
    cfg = model_config(args)
    batch = make_batch(cfg, args.batch, args.seq)
    tokens = args.batch * args.seq
    passes = 3 if args.lora else 4
    flops = passes * forward_flops_per_token(cfg, args.seq) * tokens
    compile_s, step_s, loss, peak_mem, params = time_jax(cfg, batch, args)
    peak, peak_src = peak_tflops(args)
    mfu = flops / step_s / (peak * 1e12)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  preset={args.preset} "
          f"params={cfg.num_params() / 1e6:.1f}M layers={cfg.num_layers} batch={args.batch}x{args.seq} "
          f"dtype={args.dtype}/{args.param_dtype} remat={args.remat} attention={args.attention} chunk={args.chunk} "
          f"master={args.master_weights} lora={args.lora}{' fused' if args.fuse else ''}")
    print(f"model FLOPs per step: {flops / 1e12:.3f} TFLOP ({passes - 1}x fwd conditional + 1x fwd anchor); "
          f"peak {peak:.3g} TFLOP/s ({peak_src})")
    print(f"{'implementation':<16}{'compile s':>11}{'step s':>10}{'tokens/s':>12}{'MFU':>8}{'peak GiB':>10}")
    mem = f"{peak_mem:.2f}" if peak_mem is not None else "n/a"
    print(f"{'jax (mdu_jax)':<16}{compile_s:>11.2f}{step_s:>10.4f}{tokens / step_s:>12.0f}{mfu:>8.1%}{mem:>10}")
    if args.torch and args.lora:
        print("pytorch comparison skipped: it trains full weights")
    elif args.torch:
        torch_s = time_torch(cfg, batch, params, args)
        torch_mfu = flops / torch_s / (peak * 1e12)
        print(f"{'pytorch':<16}{'-':>11}{torch_s:>10.4f}{tokens / torch_s:>12.0f}{torch_mfu:>8.1%}{'':>10}")
        print(f"time ratio pytorch / jax: {torch_s / step_s:.2f} (> 1: JAX faster)")
    print(f"jax loss after {args.steps + 1} steps: {loss:.4f}")
    return {"step_s": step_s, "tokens_per_s": tokens / step_s, "mfu": mfu, "tflops": flops / step_s / 1e12,
            "peak_gib": peak_mem, "compile_s": compile_s, "loss": loss, "peak_tflops": peak, "peak_src": peak_src}


def run_suite(parser, argv):
    """Runs every SUITE entry with BEST settings (explicit --layers/--batch/--seq/--steps/... win) and
    prints one summary table; returns the list of results."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    results = []
    for preset, layers, batch, seq in SUITE:
        args = parser.parse_args(argv)
        args.suite, args.torch, args.preset = False, False, preset
        for k, v in {**BEST, "layers": layers, "batch": batch, "seq": seq}.items():
            if k not in given:
                setattr(args, k, v)
        print(f"\n=== {preset}: {args.layers} layers, batch {args.batch} x {args.seq} ===", flush=True)
        out = bench(args)
        results.append((preset, args, out))
    peak, src = results[0][2]["peak_tflops"], results[0][2]["peak_src"]
    print(f"\nMFU summary on {jax.devices()[0].device_kind} (peak {peak:.4g} TFLOP/s, {src}; on CPU the "
          "peak is re-measured per run):")
    print(f"{'shape':<10}{'layers':>7}{'batch x seq':>13}{'step s':>10}{'tokens/s':>11}{'TFLOP/s':>9}{'MFU':>8}"
          f"{'peak GiB':>10}{'compile s':>11}")
    for preset, args, r in results:
        mem = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "n/a"
        print(f"{preset:<10}{args.layers:>7}{f'{args.batch} x {args.seq}':>13}{r['step_s']:>10.4f}"
              f"{r['tokens_per_s']:>11.0f}{r['tflops']:>9.1f}{r['mfu']:>8.1%}{mem:>10}{r['compile_s']:>11.1f}")
    return results


if __name__ == "__main__":
    main()
