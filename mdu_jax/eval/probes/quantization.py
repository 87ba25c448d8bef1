"""The quantisation attack: round-to-nearest, symmetric, per-output-channel weight quantisation.

Each quantised kernel W is replaced by ``dequant(W) = step * clip(round(W / step), -qmax, qmax)``
with ``qmax = 2**(bits-1) - 1`` (127 for int8, 7 for int4) and one ``step = max|W| / qmax`` per
output channel: the maximum runs over the kernel's *input* (contracted) axes, so every output
unit (and every layer of a stacked kernel) has its own step. Then ``|dequant(W) - W| <= step / 2``
elementwise (up to float32 rounding), which is what the tests check.

Which leaves (a choice, the one common weight-only tools make): the decoder blocks' projection
kernels (q, k, v, o, gate, up, down) are quantised; RMSNorm scales and the q/k/v biases stay as
they are (they are a tiny share of the weights and weight-only schemes keep them in full
precision); the token embedding and the LM head stay too unless ``embeddings=True``
(bitsandbytes' int8/int4 loaders keep the output layer in full precision by default, and the
embedding is a lookup table, not a linear layer). With ``embeddings=True`` the embedding gets one
step per token row and the LM head one per vocabulary column.

The arithmetic is in float32 and the result is cast back to each leaf's dtype, so a bf16 tree
comes back bf16 (the cast adds bf16 rounding on top of the step/2 bound).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mdu_jax.models.config import ModelConfig
from mdu_jax.models.params import flatten_paths, logical_axes, set_path

# Supported widths: name -> bits.
BITS = {"int8": 8, "int4": 4}

# Module name -> the logical axes its kernel contracts with the input (reduced for the step).
BLOCK_INPUT_AXES = {
    "q": ("embed",), "k": ("embed",), "v": ("embed",), "o": ("heads", "head_dim"),
    "gate": ("embed",), "up": ("embed",), "down": ("mlp",),
}
EMBEDDING_INPUT_AXES = {"embed": ("embed",), "lm_head": ("embed",)}
WEIGHT_LEAVES = ("kernel", "embedding")


def qmax(bits: int) -> int:
    """The largest quantised magnitude of a symmetric signed `bits`-bit integer: 2**(bits-1) - 1."""
    if bits not in BITS.values():
        raise ValueError(f"bits: expected one of {sorted(BITS.values())}, got {bits}")
    return 2 ** (bits - 1) - 1


def fake_quantize(w: jax.Array, reduce_axes: tuple[int, ...], bits: int) -> tuple[jax.Array, jax.Array]:
    """Quantise-dequantise one array: (dequantised [same shape, float32], step [same rank, 1 on
    `reduce_axes`, float32]).

    step = max |w| over `reduce_axes` / qmax(bits); an all-zero channel gets step 0 and stays 0.
    """
    q = qmax(bits)
    w32 = jnp.asarray(w, jnp.float32)
    step = jnp.max(jnp.abs(w32), axis=reduce_axes, keepdims=True) / q
    safe = jnp.where(step > 0, step, 1.0)
    levels = jnp.clip(jnp.round(w32 / safe), -q, q)
    return levels * step, step


def quantized_leaves(cfg: ModelConfig, *, embeddings: bool = False) -> dict[tuple[str, ...], tuple[int, ...]]:
    """{param path: axes reduced for its step} of the leaves the attack quantises (see the module
    docstring), read off ``logical_axes(cfg)`` so stacked kernels keep one step per layer."""
    out = {}
    for path, axes in flatten_paths(logical_axes(cfg)).items():
        table = BLOCK_INPUT_AXES if path[0] == "layers" else EMBEDDING_INPUT_AXES if embeddings else {}
        if path[-1] in WEIGHT_LEAVES and len(path) >= 2 and path[-2] in table:
            out[path] = tuple(i for i, name in enumerate(axes) if name in table[path[-2]])
    return out


def quantization_steps(cfg: ModelConfig, params: dict[str, Any], bits: int, *,
                       embeddings: bool = False) -> dict[tuple[str, ...], jax.Array]:
    """{param path: float32 step, broadcastable to the leaf} for every quantised leaf."""
    leaves = flatten_paths(params)
    return {path: fake_quantize(leaves[path], axes, bits)[1]
            for path, axes in quantized_leaves(cfg, embeddings=embeddings).items()}


def quantize_params(cfg: ModelConfig, params: dict[str, Any], bits: int, *,
                    embeddings: bool = False) -> dict[str, Any]:
    """The params tree with every quantised leaf replaced by its int`bits` round trip, in the
    leaf's own dtype; every other leaf is the input's array itself (untouched). `bits`: 8 or 4."""
    qmax(bits)
    leaves = flatten_paths(params)
    targets = quantized_leaves(cfg, embeddings=embeddings)
    missing = [path for path in targets if path not in leaves]
    if missing:
        raise ValueError(f"params: missing {['/'.join(p) for p in missing]} expected by the model config")
    out: dict[str, Any] = {}
    for path, leaf in leaves.items():
        if path in targets:
            leaf = fake_quantize(leaf, targets[path], bits)[0].astype(leaf.dtype)
        set_path(out, path, leaf)
    return out


__all__ = ["BITS", "BLOCK_INPUT_AXES", "EMBEDDING_INPUT_AXES", "qmax", "fake_quantize", "quantized_leaves",
           "quantization_steps", "quantize_params"]
