"""The bidirectional LLaDA / Dream network as a Flax NNX module, and the functional API over it.

``Transformer(cfg, rngs=nnx.Rngs(0))`` holds ``embed``, ``layers`` (``cfg.num_layers`` decoder
blocks created stacked by ``nnx.vmap``: one block whose Params carry a leading ``layers`` axis),
``final_norm`` and, unless the embeddings are tied, ``lm_head``. Its ``__call__`` returns logits
[B, T, V] with ``logits[:, i]`` predicting token i for both families: for Dream the network's raw
logit at i predicts token i+1 (Qwen alignment), so the hidden states are shifted right by one
before the LM head; position 0 then holds a copy of raw position 0 and is never a valid target.
The layers run under one ``jax.lax.scan`` over the stacked state (or a Python loop with
``cfg.scan_layers`` false), each iteration under ``cfg.remat_policy``.

The functional API takes the pure-dict params (``nnx.to_pure_dict(nnx.state(model, nnx.Param))``,
what the converter, orbax and the train state hold): ``forward(cfg, params, input_ids, mask)``
merges a graphdef cached per config with `params` (``model_from_params``) and calls the module.
Merging happens while JAX traces, so under ``jax.jit`` it costs nothing per step.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mdu_jax.models import layers
from mdu_jax.models.block import Adapters, DecoderBlock
from mdu_jax.models.config import ModelConfig
from mdu_jax.models.modules import Embedding, Projection, RMSNorm
from mdu_jax.models.specs import LAYER_AXIS, param_specs

Params = dict[str, Any]

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_attn_mlp_out": jax.checkpoint_policies.save_only_these_names("attn_out", "mlp_out"),
}


def attention_mask_4d(cfg: ModelConfig, attention_mask: jax.Array | None) -> jax.Array | None:
    """Boolean [B, 1, T|1, T] attention mask from a [B, T] padding mask (1 = token, 0 = pad).

    LLaDA masks keys only (pad queries still see every valid key); Dream masks queries and keys,
    so a pad row sees nothing (the attention then returns a finite, meaningless value there).
    """
    if attention_mask is None:
        return None
    valid = attention_mask.astype(bool)
    keys = valid[:, None, None, :]
    if cfg.masks_queries:
        return keys & valid[:, None, :, None]
    return keys


def default_positions(input_ids: jax.Array) -> jax.Array:
    """Position ids [B, T] = 0..T-1, what both PyTorch models use when none are passed.

    Padding does not shift them (LLaDA has no position argument at all). Dream's sampler passes
    cumsum(mask) - 1 explicitly for left-padded prompts.
    """
    B, T = input_ids.shape
    return jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))


def with_remat(cfg: ModelConfig, fn):
    """`fn` under ``jax.checkpoint`` with the config's named policy ('none': unchanged)."""
    if cfg.remat_policy == "none":
        return fn
    return jax.checkpoint(fn, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)


def stacked(create, num_layers: int, rngs: nnx.Rngs):
    """``create(rngs)`` run under ``nnx.vmap`` with `rngs` split `num_layers` ways: one module whose
    Params have a leading axis of that size, named ``layers`` in their sharding metadata."""
    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(axis_size=num_layers, transform_metadata={nnx.PARTITION_NAME: LAYER_AXIS})
    def create_stacked(rngs):
        return create(rngs)

    return create_stacked(rngs)


def _check_inputs(ids: Sequence[jax.Array], attention_mask) -> None:
    if len(ids) == 1 and ids[0].ndim != 2:
        raise ValueError(f"input_ids: expected shape [B, T], got {ids[0].shape}")
    for i in ids:
        if i.ndim != 2 or i.shape != ids[0].shape:
            raise ValueError(f"input_ids: expected [B, T] arrays of one shape, got {[a.shape for a in ids]}")
    if attention_mask is not None and attention_mask.shape != ids[0].shape:
        raise ValueError(f"attention_mask: expected shape {ids[0].shape}, got {attention_mask.shape}")


class Transformer(nnx.Module):
    """LLaDA or Dream (``cfg.family``): embedding, stacked decoder blocks, final norm, LM head.

    Parameters as in ``models/specs.py``; ``nnx.state(model, nnx.Param)`` as a pure dict is the
    params tree of the functional API.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        specs = param_specs(cfg)
        self.cfg = cfg
        self.embed = Embedding(specs["embed"]["embedding"], cfg.weight_dtype, cfg.compute_dtype, rngs=rngs)
        self.layers = stacked(lambda r: DecoderBlock(cfg, rngs=r), cfg.num_layers, rngs)
        self.final_norm = RMSNorm(specs["final_norm"]["scale"], cfg.weight_dtype, cfg.rms_norm_eps, rngs=rngs)
        if not cfg.tie_word_embeddings:
            self.lm_head = Projection(specs["lm_head"], "...d,dv->...v", cfg.weight_dtype, cfg.compute_dtype,
                                      rngs=rngs)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 position_ids: jax.Array | None = None) -> jax.Array:
        """Logits [B, T, V] (compute dtype) with ``logits[:, i]`` predicting token i, both families.

        input_ids: int [B, T]. attention_mask: optional [B, T] (1 = token, 0 = padding); an all-ones
        mask is the same as None. position_ids: optional [B, T]; default 0..T-1 for both families,
        as in the PyTorch models. For Dream, ``logits[:, 0]`` is a copy of the raw first logit and
        must never be used as a prediction (the first token of a sequence is always given).
        """
        return self.logits_from_hidden(self.hidden_states(input_ids, attention_mask, position_ids))

    def hidden_states(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                      position_ids: jax.Array | None = None, *, adapters: Adapters | None = None,
                      read_at: jax.Array | None = None) -> jax.Array:
        """Final-norm hidden states [B, T, D] in the compute dtype, aligned so that position i
        predicts token i (Dream's right shift already applied). `adapters`: stacked low-rank
        adapters added to the blocks' projections (``models/lora.py``).

        ``read_at`` (int [B, R]): only the hidden states at these positions, [B, R, D], equal to
        ``take_along_axis(hidden_states(...), read_at)``; the last layer then computes only the
        rows read (every earlier layer still needs every position)."""
        return self._stack((input_ids,), attention_mask, position_ids, adapters, read_at)[0]

    def paired_hidden_states(self, cond_ids: jax.Array, anchor_ids: jax.Array,
                             attention_mask: jax.Array | None = None, *,
                             adapters: Adapters | None = None) -> tuple[jax.Array, jax.Array]:
        """(hidden states of `cond_ids` through base + `adapters`, stop-gradient hidden states of
        `anchor_ids` through the base alone), both [B, T, D], from one scan of ``DecoderBlock.paired``.
        Both passes share `attention_mask` and the default positions."""
        cond, anchor = self._stack((cond_ids, anchor_ids), attention_mask, None, adapters)
        return cond, jax.lax.stop_gradient(anchor)

    def lm_head_kernel(self) -> jax.Array:
        """The output matrix [D, V] in the param dtype (the transposed embedding when tied)."""
        if self.cfg.tie_word_embeddings:
            return self.embed.embedding[...].T
        return self.lm_head.kernel[...]

    def logits_from_hidden(self, hidden: jax.Array) -> jax.Array:
        """hidden [..., D] -> logits [..., V] in the compute dtype (upcast before any softmax)."""
        return jnp.einsum("...d,dv->...v", hidden, self.lm_head_kernel().astype(self.cfg.compute_dtype))

    def _stack(self, ids: Sequence[jax.Array], attention_mask, position_ids, adapters, read_at=None) -> tuple:
        cfg = self.cfg
        _check_inputs(ids, attention_mask)
        xs = tuple(self.embed(i) for i in ids)
        if len(xs) == 2:
            xs = (xs[0], jax.lax.stop_gradient(xs[1]))
        if position_ids is None:
            position_ids = default_positions(ids[0])
        cos, sin = layers.rope_tables(position_ids, cfg.head_dim, cfg.rope_theta)
        mask = attention_mask_4d(cfg, attention_mask)
        block_def, block_state = nnx.split(self.layers)
        adapter_def, adapter_state = nnx.split(adapters) if adapters is not None else (None, None)

        def layer(carry, states, rows=None):
            block = nnx.merge(block_def, states[0])
            adapter = nnx.merge(adapter_def, states[1]) if adapter_def is not None else None
            return block.streams(carry, mask, cos, sin, adapter, rows), None

        layer = with_remat(cfg, layer)
        states = (block_state, adapter_state)
        full_layers = cfg.num_layers if read_at is None else cfg.num_layers - 1
        if cfg.scan_layers and full_layers:
            xs, _ = jax.lax.scan(layer, xs, jax.tree.map(lambda a: a[:full_layers], states))
        elif not cfg.scan_layers:
            for i in range(full_layers):
                xs, _ = layer(xs, jax.tree.map(lambda a: a[i], states))
        if read_at is not None:
            # Dream's output i is the network's position i - 1 (position 0 copies itself).
            rows = jnp.maximum(read_at - 1, 0) if cfg.shifts_logits else read_at
            xs, _ = layer(xs, jax.tree.map(lambda a: a[-1], states), rows.astype(jnp.int32))
            return tuple(self.final_norm(x) for x in xs)
        out = []
        for x in xs:
            x = self.final_norm(x)
            if cfg.shifts_logits:
                x = jnp.concatenate([x[:, :1], x[:, :-1]], axis=1)
            out.append(x)
        return tuple(out)


# ---------------------------------------------------------------------------------------------
# The functional API: pure-dict params merged into a cached graphdef.


@functools.lru_cache(maxsize=64)
def abstract_model(cfg: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, abstract Param state) of ``Transformer(cfg)``, from ``nnx.eval_shape`` (nothing is
    allocated); cached per config. The state's leaves are Params holding ShapeDtypeStructs, with
    their logical axes as ``out_sharding`` metadata."""
    return nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))


def state_from_params(abstract: nnx.State, params: Any, what: str = "params") -> nnx.State:
    """The State shaped like `abstract` holding the leaves of the pure dict `params` (or of a State).

    Raises ValueError naming the missing or unexpected parameter paths when the trees differ.
    """
    if isinstance(params, nnx.State):
        params = nnx.to_pure_dict(params)
    expected = nnx.to_pure_dict(abstract)
    if jax.tree.structure(params) != jax.tree.structure(expected):
        want = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(expected)}
        got = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)}
        raise ValueError(f"{what}: not the parameter tree of this model; missing {sorted(want - got)}, "
                         f"unexpected {sorted(got - want)}")
    return jax.tree.unflatten(jax.tree.structure(abstract), jax.tree.leaves(params))


def model_from_params(cfg: ModelConfig, params: Params) -> Transformer:
    """``Transformer(cfg)`` holding `params` (a pure dict, or an ``nnx.State``): the cached graphdef
    merged with them. Works on arrays and on tracers, inside or outside ``jax.jit``."""
    graphdef, abstract = abstract_model(cfg)
    return nnx.merge(graphdef, state_from_params(abstract, params))


def hidden_states(cfg: ModelConfig, params: Params, input_ids: jax.Array,
                  attention_mask: jax.Array | None = None,
                  position_ids: jax.Array | None = None, read_at: jax.Array | None = None) -> jax.Array:
    """``Transformer.hidden_states`` of the model holding `params`: [B, T, D] in the compute dtype,
    position i predicting token i (Dream's right shift applied); with ``read_at`` (int [B, R])
    only those positions, [B, R, D], the last layer computing only them."""
    return model_from_params(cfg, params).hidden_states(input_ids, attention_mask, position_ids, read_at=read_at)


def lm_head_kernel(cfg: ModelConfig, params: Params) -> jax.Array:
    """The output matrix [D, V] (the transposed embedding when tied)."""
    return model_from_params(cfg, params).lm_head_kernel()


def logits_from_hidden(cfg: ModelConfig, params: Params, hidden: jax.Array) -> jax.Array:
    """hidden [..., D] -> logits [..., V] in the compute dtype (upcast before any softmax)."""
    return model_from_params(cfg, params).logits_from_hidden(hidden)


def forward(cfg: ModelConfig, params: Params, input_ids: jax.Array,
            attention_mask: jax.Array | None = None,
            position_ids: jax.Array | None = None) -> jax.Array:
    """Logits [B, T, V] (compute dtype) of the model holding `params`; ``logits[:, i]`` predicts
    token i for both families (see ``Transformer.__call__``)."""
    return model_from_params(cfg, params)(input_ids, attention_mask, position_ids)
