"""Compiled JAX sampler vs a PyTorch implementation of the same algorithm, on one tiny model.

    python bench/sampling.py [--hidden 64 --layers 2 --vocab 512 --gen-length 64 --steps 64 ...]

The model is a random LLaDA-shaped network; the PyTorch side is transformers' Llama with
``is_causal=False`` holding the same weights, driven by a per-step Python loop written the way
dllm's MDLMSampler is (low-confidence remasking, blocks, official even-split schedule,
left-aligned prompts with a padding mask). Both run on CPU in float32. The table gives tokens
generated per second, their ratio, whether the two produced the same tokens, and the number of
XLA compilations triggered by a second batch of other prompts in the same bucket (0 means the
compiled loop was reused).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's mdu_jax

import jax  # noqa: E402
import numpy as np  # noqa: E402

import mdu_jax  # noqa: E402
from mdu_jax.models.params import ParamSpec, param_specs  # noqa: E402
from mdu_jax.sampling import compiled_programs, denoise, generate  # noqa: E402

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def tiny_llada(args) -> tuple[mdu_jax.ModelConfig, dict]:
    cfg = mdu_jax.ModelConfig(
        family="llada", vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
        num_heads=args.heads, num_kv_heads=args.heads, head_dim=args.hidden // args.heads,
        intermediate_size=args.hidden * 3, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
        qkv_bias=False, mask_token_id=args.vocab - 1, eos_token_id=1, pad_token_id=1)
    rng = np.random.default_rng(0)

    def make(path, spec):
        if spec.init == "ones":
            return np.ones(spec.shape, np.float32)
        std = 0.5 if "lm_head" in jax.tree_util.keystr(path) else 0.15
        return (std * rng.standard_normal(spec.shape)).astype(np.float32)

    params = jax.tree_util.tree_map_with_path(make, param_specs(cfg), is_leaf=lambda x: isinstance(x, ParamSpec))
    return cfg, jax.tree.map(jax.numpy.asarray, params)


def torch_llama(cfg: mdu_jax.ModelConfig, params):
    """transformers' bidirectional Llama holding ``params`` (the name map written out here)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                         intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
                         num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                         rms_norm_eps=cfg.rms_norm_eps, rope_theta=cfg.rope_theta, max_position_embeddings=1024,
                         tie_word_embeddings=False, attention_bias=False, mlp_bias=False, is_causal=False,
                         pad_token_id=cfg.pad_token_id)
    p = jax.tree.map(np.asarray, params)
    D = cfg.hidden_size
    sd = {"model.embed_tokens.weight": p["embed"]["embedding"], "model.norm.weight": p["final_norm"]["scale"],
          "lm_head.weight": p["lm_head"]["kernel"].T}
    lp = p["layers"]
    for i in range(cfg.num_layers):
        b = f"model.layers.{i}."
        sd[b + "input_layernorm.weight"] = lp["attn_norm"]["scale"][i]
        sd[b + "post_attention_layernorm.weight"] = lp["mlp_norm"]["scale"][i]
        for name in ("q", "k", "v"):
            sd[b + f"self_attn.{name}_proj.weight"] = lp[name]["kernel"][i].reshape(D, -1).T
        sd[b + "self_attn.o_proj.weight"] = lp["o"]["kernel"][i].reshape(-1, D).T
        sd[b + "mlp.gate_proj.weight"] = lp["gate"]["kernel"][i].T
        sd[b + "mlp.up_proj.weight"] = lp["up"]["kernel"][i].T
        sd[b + "mlp.down_proj.weight"] = lp["down"]["kernel"][i].T
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict({k: torch.tensor(np.ascontiguousarray(v)) for k, v in sd.items()},
                                                strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return model.float().eval()


def torch_generate(model, cfg, prompts, gen_length, steps, block_length):
    """LLaDA low-confidence remasking at temperature 0, one Python iteration per step (dllm-style)."""
    import torch

    mask_id, B = cfg.mask_token_id, len(prompts)
    lens = [len(p) for p in prompts]
    T = max(lens) + gen_length
    x = torch.full((B, T), cfg.eos_token_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    for j, p in enumerate(prompts):
        x[j, :lens[j]] = torch.tensor(p)
        x[j, lens[j]:lens[j] + gen_length] = mask_id
        attn[j, :lens[j] + gen_length] = 1
    num_blocks = gen_length // block_length
    per_block = steps // num_blocks
    base, rem = divmod(block_length, per_block)
    counts = [base + (1 if i < rem else 0) for i in range(per_block)]
    with torch.no_grad():
        for b in range(num_blocks):
            for k in counts:
                if k == 0:
                    continue
                logits = model(input_ids=x, attention_mask=attn).logits.float()
                x0 = logits.argmax(-1)
                conf = torch.softmax(logits, -1).gather(-1, x0[..., None])[..., 0]
                for j in range(B):
                    conf[j, lens[j] + (b + 1) * block_length:] = -np.inf
                is_mask = x == mask_id
                conf = torch.where(is_mask, conf, torch.tensor(-np.inf))
                for j in range(B):
                    idx = torch.topk(conf[j], k).indices
                    x[j, idx] = x0[j, idx]
    return np.stack([x[j, lens[j]:lens[j] + gen_length].numpy() for j in range(B)])


def random_prompts(rng, batch, lo, hi, vocab):
    return [rng.integers(2, vocab - 1, size=int(n)).tolist() for n in np.linspace(lo, hi, batch).round()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--gen-length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import torch

    cfg, params = tiny_llada(args)
    model = torch_llama(cfg, params)
    rng = np.random.default_rng(1)
    first = random_prompts(rng, args.batch, 5, 20, cfg.vocab_size)
    second = random_prompts(rng, args.batch, 6, 21, cfg.vocab_size)  # same bucket (<= 24 tokens)
    kw = dict(gen_length=args.gen_length, steps=args.steps, block_length=args.block_length)

    ids = np.asarray([first[0] + [cfg.mask_token_id] * 4])
    jax_logits = np.asarray(mdu_jax.forward(cfg, params, ids))
    with torch.no_grad():
        torch_logits = model(input_ids=torch.tensor(ids)).logits.numpy()
    logit_gap = float(np.abs(jax_logits - torch_logits).max())

    t = time.perf_counter()
    generate(cfg, params, first, **kw)
    compile_s = time.perf_counter() - t
    programs, cache = compiled_programs(), denoise._cache_size()
    compiles = []

    def listener(event, duration, **_):
        if event == BACKEND_COMPILE_EVENT:
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    jax_times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        jax_tokens = generate(cfg, params, second, **kw).tokens
        jax_times.append(time.perf_counter() - t)
    jax.monitoring.unregister_event_duration_listener(listener)

    torch_times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        torch_tokens = torch_generate(model, cfg, second, **kw)
        torch_times.append(time.perf_counter() - t)

    n_tokens = args.batch * args.gen_length
    jax_tps, torch_tps = n_tokens / min(jax_times), n_tokens / min(torch_times)
    same_rows = int((jax_tokens == torch_tokens).all(axis=1).sum())
    print(f"model: LLaDA-shaped, D={cfg.hidden_size}, layers={cfg.num_layers}, V={cfg.vocab_size}, fp32, CPU "
          f"({os.cpu_count()} cores); batch {args.batch}, gen_length {args.gen_length}, steps {args.steps}, "
          f"block {args.block_length}; best of {args.repeats}; torch {torch.__version__}, jax {jax.__version__}")
    print(f"max |logit difference| JAX vs torch on one row: {logit_gap:.2e}")
    print()
    print(f"| {'implementation':<34} | {'seconds/batch':>13} | {'tokens/s':>10} |")
    print(f"|{'-' * 36}|{'-' * 15}|{'-' * 12}|")
    print(f"| {'mdu_jax generate (one jit program)':<34} | {min(jax_times):>13.4f} | {jax_tps:>10.1f} |")
    print(f"| {'PyTorch loop (transformers Llama)':<34} | {min(torch_times):>13.4f} | {torch_tps:>10.1f} |")
    print()
    print(f"speed-up JAX / PyTorch: {jax_tps / torch_tps:.1f}x (target >= 2x)")
    print(f"identical generated rows: {same_rows}/{args.batch}")
    print(f"first batch (trace + compile + run): {compile_s:.2f} s")
    print(f"second-bucket batches: {len(compiles)} XLA compilations, sampler programs "
          f"{programs} -> {compiled_programs()}, jit cache {cache} -> {denoise._cache_size()}")


if __name__ == "__main__":
    main()
