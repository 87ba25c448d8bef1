"""Compiled memory of the objectives: full logits vs chunked evaluation from hidden states.

    python -m bench.objectives_memory                       # B=2 T=512 V=32000 D=256, chunk 64
    python -m bench.objectives_memory --vocab 126464 --run  # LLaDA's vocabulary; also execute once

For the MDU forget term (two model passes: conditional and anchor) and the MDLM loss (one pass),
prints XLA's buffer assignment for ``jax.jit(f).lower(...).compile().memory_analysis()``:
temp (scratch buffers) and peak = arguments + outputs + temp, for the value alone and for value
and gradient (w.r.t. the conditional hidden states and LM-head kernel). "unchunked" forms
``logits = hidden @ kernel`` whole and calls the logits-level loss; "chunked" is
``objectives.chunked``. --run also executes both and checks that the values agree.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mdu_jax import diffusion  # noqa: E402
from mdu_jax.objectives import chunked as C  # noqa: E402
from mdu_jax.objectives import mdu_loss  # noqa: E402

MiB = 2 ** 20


def _cases(chunk: int, tau: float, divergence: str):
    def mdu_full(hc, kc, ha, ka, ids, masked, maskable, t):
        return mdu_loss(C.project(hc, kc), C.project(ha, ka), masked, tau=tau, divergence=divergence)

    def mdu_chunked(hc, kc, ha, ka, ids, masked, maskable, t):
        return C.chunked_mdu_loss(hc, kc, ha, ka, masked, chunk_size=chunk, tau=tau, divergence=divergence)

    def mdlm_full(hc, kc, ha, ka, ids, masked, maskable, t):
        return diffusion.mdlm_loss(C.project(hc, kc), ids, masked, maskable, t)

    def mdlm_chunked(hc, kc, ha, ka, ids, masked, maskable, t):
        return C.chunked_mdlm_loss(hc, kc, ids, masked, maskable, t, chunk_size=chunk)

    return {f"MDU {divergence} (2 passes)": (mdu_full, mdu_chunked), "MDLM loss (1 pass)": (mdlm_full, mdlm_chunked)}


def _inputs(B, T, D, V, dtype, seed=0):
    rng = np.random.default_rng(seed)
    maskable = np.zeros((B, T), bool)
    maskable[:, T // 8:] = True
    t = rng.uniform(1e-3, 1.0, B).astype(np.float32)
    masked = (rng.random((B, T)) < t[:, None]) & maskable
    h = lambda: jnp.asarray(rng.standard_normal((B, T, D)), dtype)  # noqa: E731
    k = lambda: jnp.asarray(rng.standard_normal((D, V)) / np.sqrt(D), dtype)  # noqa: E731
    return (h(), k(), h(), k(), jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32), jnp.asarray(masked),
            jnp.asarray(maskable), jnp.asarray(t))


def _memory(f, args):
    m = jax.jit(f).lower(*args).compile().memory_analysis()
    temp = m.temp_size_in_bytes
    return temp, m.argument_size_in_bytes + m.output_size_in_bytes + temp


def _time(f, args, reps=3):
    g = jax.jit(f)
    out = jax.block_until_ready(g(*args))
    t0 = time.perf_counter()
    for _ in range(reps):
        jax.block_until_ready(g(*args))
    return out, (time.perf_counter() - t0) / reps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--divergence", default="forward", choices=["forward", "reverse", "js"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--run", action="store_true", help="also execute both versions once and compare values")
    a = p.parse_args(argv)

    args = _inputs(a.batch, a.seq, a.hidden, a.vocab, jnp.dtype(a.dtype))
    logits_mib = a.batch * a.seq * a.vocab * 4 / MiB
    print(f"B={a.batch} T={a.seq} V={a.vocab} D={a.hidden} chunk={a.chunk} dtype={a.dtype} "
          f"device={jax.devices()[0].platform}; one fp32 [B,T,V] array = {logits_mib:.1f} MiB, "
          f"one chunk of it = {logits_mib * min(a.chunk, a.seq) / a.seq:.1f} MiB")
    print(f"{'objective':<24} {'mode':<12} {'unchunked temp':>15} {'chunked temp':>13} "
          f"{'unchunked peak':>15} {'chunked peak':>13} {'peak ratio':>10}")
    for name, (full, part) in _cases(a.chunk, a.tau, a.divergence).items():
        for mode in ("value", "value+grad"):
            wrap = (lambda f: jax.value_and_grad(f, argnums=(0, 1))) if mode == "value+grad" else (lambda f: f)
            (ut, up), (ct, cp) = _memory(wrap(full), args), _memory(wrap(part), args)
            print(f"{name:<24} {mode:<12} {ut / MiB:>11.1f} MiB {ct / MiB:>9.1f} MiB "
                  f"{up / MiB:>11.1f} MiB {cp / MiB:>9.1f} MiB {up / cp:>9.1f}x")
        if a.run:
            (v1, s1), (v2, s2) = _time(full, args), _time(part, args)
            print(f"{'':<24} run: unchunked {float(v1):.7g} in {s1 * 1e3:.0f} ms, chunked {float(v2):.7g} "
                  f"in {s2 * 1e3:.0f} ms, rel. diff {abs(float(v1) - float(v2)) / abs(float(v1)):.1e}")


if __name__ == "__main__":
    main()
