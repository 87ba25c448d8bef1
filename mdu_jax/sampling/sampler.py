"""``generate``: batched, compiled masked-diffusion sampling for LLaDA and Dream.

The denoising loop of a batch is one ``jax.jit`` program (a ``lax.fori_loop`` over a range of
the steps that reveal tokens, static shapes). The program depends only on the model config, the
sampler options (``SamplerSpec``) and the bucketed shapes, so every later batch in the same
bucket reuses it: ``compiled_programs()`` counts the programs built so far. ``generate`` runs it
one segment at a time (a LLaDA block, or ``DREAM_SEGMENT`` Dream steps): the same program
serves every segment, and between segments the host reports progress and, when asked, stops a
batch whose texts can no longer change.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mdu_jax.models.config import ModelConfig, inference_config
from mdu_jax.sampling import dream as dream_lib
from mdu_jax.sampling import llada as llada_lib
from mdu_jax.sampling import prompts as prompts_lib
from mdu_jax.sampling import schedules
from mdu_jax.sampling.common import row_keys, slot_logits, step_keys, suppress

DEFAULT_ALGORITHM = {"llada": "low_confidence", "dream": "entropy"}
DREAM_SEGMENT = 32  # Dream steps per host round trip (Dream has no blocks)
EOT_TOKENS = {"llada": "<|eot_id|>", "dream": "<|im_end|>"}


@dataclasses.dataclass(frozen=True)
class GenerationOutput:
    """tokens: int32 [N, gen_length], the generation slots of each prompt in the caller's order
    (EOS and whatever follows it included; with ``stop_early``, slots after a row's first stop
    token may still hold the mask id). texts: the decoded slots cut at the first stop token with
    special tokens skipped, or None without a tokenizer. steps_run / steps_skipped: denoising
    steps (forward passes of a batch) run, and left out by ``stop_early``, over all batches."""

    tokens: np.ndarray
    texts: list[str] | None = None
    steps_run: int = 0
    steps_skipped: int = 0


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """Everything that shapes the compiled loop (hashable; a jit static argument).

    ``plan`` holds one (step index, block index, count, reveal probability) tuple per loop
    iteration: LLaDA uses block and count, Dream's confidence algorithms use count, Dream's
    'origin' uses the probability. The step index seeds that step's random stream.
    """

    family: str
    algorithm: str
    gen_length: int
    block_length: int
    plan: tuple[tuple[int, int, int, float], ...]
    temperature: float = 0.0
    cfg_scale: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    alg_temp: float | None = None
    suppress_tokens: tuple[int, ...] = ()
    confidence_suppress_tokens: tuple[int, ...] = ()


def make_spec(cfg: ModelConfig, *, gen_length: int, steps: int, block_length: int | None = None,
              temperature: float = 0.0, algorithm: str | None = None, schedule: str = "official",
              eps: float = 1e-3, cfg_scale: float = 0.0, top_p: float | None = None, top_k: int | None = None,
              alg_temp: float | None = None, suppress_tokens: Sequence[int] = (),
              confidence_suppress_tokens: Sequence[int] = ()) -> SamplerSpec:
    """Validates the sampler options and computes the step plan (see ``generate``)."""
    family = cfg.family
    algorithm = algorithm or DEFAULT_ALGORITHM[family]
    for name, value in (("gen_length", gen_length), ("steps", steps)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature: expected >= 0, got {temperature!r}")
    if not cfg_scale >= 0:
        raise ValueError(f"cfg_scale: expected >= 0, got {cfg_scale!r}")
    if family == "llada":
        if algorithm not in llada_lib.REMASKING:
            raise ValueError(f"algorithm: {algorithm!r} is not a LLaDA remasking; expected one of "
                             f"{llada_lib.REMASKING}")
        for name, value in (("top_p", top_p), ("top_k", top_k), ("alg_temp", alg_temp)):
            if value is not None:
                raise ValueError(f"{name}: a Dream option; the LLaDA sampler does not use it")
        block_length = gen_length if block_length is None else block_length
        plan = tuple((i, b, c, 1.0) for i, (b, c) in
                     enumerate(schedules.llada_plan(gen_length, block_length, steps, schedule)))
    else:
        if algorithm not in dream_lib.ALGORITHMS:
            raise ValueError(f"algorithm: {algorithm!r} is not a Dream algorithm; expected one of "
                             f"{dream_lib.ALGORITHMS}")
        if block_length not in (None, gen_length):
            raise ValueError("block_length: Dream's diffusion_generate has no blocks; leave it None")
        if schedule not in ("official", "dream"):
            raise ValueError(f"schedule: Dream uses its own floor schedule; got {schedule!r}")
        if top_k is not None and int(top_k) < 1:
            raise ValueError(f"top_k: expected >= 1, got {top_k!r}")
        block_length = gen_length
        counts = schedules.dream_transfer_counts(gen_length, steps, eps)
        probs = schedules.dream_reveal_probs(steps, eps)
        if algorithm == "origin":
            plan = tuple((i, 0, 0, float(probs[i])) for i in range(steps))
        else:
            # A step that reveals nothing leaves the canvas as it was: skip its forward pass.
            plan = tuple((i, 0, int(counts[i]), 1.0) for i in range(steps) if counts[i] > 0)
    return SamplerSpec(family=family, algorithm=algorithm, gen_length=int(gen_length),
                       block_length=int(block_length), plan=plan, temperature=float(temperature),
                       cfg_scale=float(cfg_scale), top_p=None if top_p is None else float(top_p),
                       top_k=None if top_k is None else int(top_k),
                       alg_temp=None if not alg_temp else float(alg_temp),
                       suppress_tokens=tuple(int(t) for t in suppress_tokens),
                       confidence_suppress_tokens=tuple(int(t) for t in confidence_suppress_tokens))


_TRACES = [0]


def compiled_programs() -> int:
    """How many sampler programs have been traced (and compiled) in this process."""
    return _TRACES[0]


def segments(spec: SamplerSpec) -> list[tuple[int, int]]:
    """[start, stop) ranges of ``spec.plan`` that ``generate`` runs one call each: LLaDA's
    blocks (after a block, its slots are final), Dream's steps ``DREAM_SEGMENT`` at a time."""
    bounds = [0]
    for i in range(1, len(spec.plan)):
        if (spec.family == "llada" and spec.plan[i][1] != spec.plan[i - 1][1]) or (
                spec.family == "dream" and i % DREAM_SEGMENT == 0):
            bounds.append(i)
    bounds.append(len(spec.plan))
    return list(zip(bounds[:-1], bounds[1:]))


def reads_current_block(spec: SamplerSpec) -> bool:
    """Whether a step needs the logits of its block's slots only: LLaDA with several blocks of
    ``block_length`` whose steps reveal every slot of their block. A step reveals only masked
    slots before its block's end, and every earlier block is then fully revealed, so the other
    slots' logits cannot change anything; the last layer and the LM head skip them."""
    if spec.family != "llada" or spec.gen_length % spec.block_length or spec.gen_length == spec.block_length:
        return False
    revealed = [0] * (spec.gen_length // spec.block_length)
    for _, block, count, _ in spec.plan:
        revealed[block] += count
    return all(n == spec.block_length for n in revealed)


def read_slots(spec: SamplerSpec) -> int:
    """Generation slots whose logits one denoising step computes (``reads_current_block``)."""
    return spec.block_length if reads_current_block(spec) else spec.gen_length


def settled_rows(tokens: np.ndarray, mask_id: int, stop_ids: Sequence[int]) -> np.ndarray:
    """bool [B]: rows of generation slots [B, G] whose decoded text can no longer change: a stop
    token is revealed and every slot before it is revealed too (revealed slots never change, and
    the text is cut at the first stop token)."""
    tokens = np.asarray(tokens)
    if not len(stop_ids):
        return np.zeros(tokens.shape[0], dtype=bool)
    masked = tokens == mask_id
    first_masked = np.where(masked.any(axis=1), masked.argmax(axis=1), tokens.shape[1])
    before = np.arange(tokens.shape[1])[None, :] < first_masked[:, None]
    return (np.isin(tokens, np.asarray(stop_ids)) & before).any(axis=1)


@functools.partial(jax.jit, static_argnames=("cfg", "spec"))
def denoise(cfg: ModelConfig, spec: SamplerSpec, params, gen, input_ids, uncond_ids, attention_mask, position_ids,
            gen_index, row_ids, seed, start, stop):
    """The compiled loop: int32 generation slots [B, G] after steps ``start`` .. ``stop - 1`` of
    ``spec.plan``, starting from the slots ``gen`` (all mask ids before step 0).

    Inputs are a ``prompts.Canvas``'s arrays plus scalars ``seed``, ``start`` and ``stop`` (traced:
    one program serves every range); see ``prompts`` for the layouts and ``common`` for the
    random streams.
    """
    _TRACES[0] += 1  # runs once per trace, i.e. once per compiled program
    B, G = gen_index.shape
    plan = np.asarray([p[:3] for p in spec.plan], dtype=np.int32).reshape(-1, 3)
    probs = jnp.asarray(np.asarray([p[3] for p in spec.plan], dtype=np.float32))
    step_ids, blocks, counts = (jnp.asarray(plan[:, j]) for j in range(3))
    keys = row_keys(seed, row_ids)
    block_only = reads_current_block(spec)

    def body(i, gen):
        token_keys, position_keys = step_keys(keys, step_ids[i])
        if block_only:
            # Zeros for the other slots: none of them can be revealed at this step.
            start = blocks[i] * spec.block_length
            read = jax.lax.dynamic_slice_in_dim(gen_index, start, spec.block_length, axis=1)
            part = slot_logits(cfg, params, gen, input_ids, uncond_ids, attention_mask, position_ids, gen_index,
                               spec.cfg_scale, read_index=read)
            logits = jax.lax.dynamic_update_slice_in_dim(jnp.zeros((B, G, part.shape[-1]), part.dtype), part,
                                                         start, axis=1)
        else:
            logits = slot_logits(cfg, params, gen, input_ids, uncond_ids, attention_mask, position_ids, gen_index,
                                 spec.cfg_scale)
        if spec.family == "llada":
            return llada_lib.llada_update(
                logits, gen, mask_id=cfg.mask_token_id, block_end=(blocks[i] + 1) * spec.block_length,
                count=counts[i], temperature=spec.temperature, remasking=spec.algorithm,
                suppress_tokens=spec.suppress_tokens, confidence_suppress_tokens=spec.confidence_suppress_tokens,
                token_keys=token_keys, position_keys=position_keys)
        logits = suppress(logits, spec.suppress_tokens)
        return dream_lib.dream_update(
            logits, gen, mask_id=cfg.mask_token_id, algorithm=spec.algorithm, count=counts[i],
            reveal_prob=probs[i], temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k,
            alg_temp=spec.alg_temp, token_keys=token_keys, position_keys=position_keys)

    return jax.lax.fori_loop(start, stop, body, gen)


def _special_id(tokenizer, token: str) -> int | None:
    if tokenizer is None:
        return None
    tid = tokenizer.convert_tokens_to_ids(token)
    return None if tid is None or tid == tokenizer.unk_token_id else int(tid)


def generate(cfg: ModelConfig, params, prompts, *, tokenizer=None, gen_length: int = 128, steps: int = 128,
             block_length: int | None = None, temperature: float = 0.0, algorithm: str | None = None,
             seed: int = 0, schedule: str = "official", cfg_scale: float = 0.0, eps: float = 1e-3,
             top_p: float | None = None, top_k: int | None = None, alg_temp: float | None = None,
             suppress_tokens: Sequence[int] = (), confidence_suppress_tokens: Sequence[int] = (),
             logits_eos_inf: bool = False, confidence_eos_eot_inf: bool = False, eot_token_id: int | None = None,
             batch_size: int = 32, prompt_buckets: Sequence[int] | None = None,
             stop_token_ids: Sequence[int] | None = None, skip_special_tokens: bool = True,
             stop_early: bool = False, on_forward: Callable[[int], None] | None = None) -> GenerationOutput:
    """Fills ``gen_length`` masked slots after each prompt by iterative unmasking.

    prompts: token ids with the chat template already applied (one list, a list of lists, a 1-D
    or 2-D numpy / jax array), a tokenizer's ``BatchEncoding`` (e.g. from
    ``tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)``;
    padding removed by its attention mask), or a string / list of strings when ``tokenizer`` is
    given (encoded without adding special tokens); ``prompts.encode_prompts`` says exactly.

    LLaDA (``algorithm`` 'low_confidence' (default) or 'random'; reference-mdlm 4.1/4.2): blocks
    of ``block_length`` (default ``gen_length``) are filled left to right; ``schedule`` is
    'official' (LLaDA's even split; needs ``gen_length % block_length == 0`` and
    ``steps % num_blocks == 0``) or 'dllm' (ceil blocks/steps, round-half-even counts, empty
    steps removed; what MDU's TOFU evaluation runs with steps=256). ``temperature`` adds Gumbel
    noise to the token choice; the confidence stays the noise-free softmax. ``cfg_scale`` > 0 adds
    classifier-free guidance against the prompt-masked canvas. ``suppress_tokens`` /
    ``logits_eos_inf`` ban tokens; ``confidence_suppress_tokens`` / ``confidence_eos_eot_inf`` make
    EOS/EOT (``eot_token_id``, by default looked up in the tokenizer) the last tokens revealed.

    Dream (``algorithm`` 'origin', 'maskgit_plus', 'topk_margin' or 'entropy' (default, as in
    MDU's evaluations); reference-mdlm 4.3): ``steps`` steps on ``linspace(1, eps, steps + 1)``,
    always Dream's floor schedule (``schedule`` must stay 'official'), ``temperature``,
    ``top_p``, ``top_k``, ``alg_temp``; prompts are left-padded with Dream's position ids.
    ``cfg_scale`` and ``suppress_tokens`` also work. Steps that reveal no token are skipped
    (same result, fewer forward passes).

    Batching (``prompts.plan_batches``): prompts are sorted by length, split into batches of at
    most ``batch_size`` (and apart where their lengths differ a lot), and each batch is padded to
    a canvas-length bucket (prompt + ``gen_length`` slots; ``prompt_buckets``, default
    ``prompts.default_buckets()``) and a row count (``prompts.batch_bucket``), so the compiled
    loop is reused across batches. ``seed`` and a prompt's index determine its random stream,
    whatever the batching.

    ``stop_early``: a batch stops once every row's text is settled (``settled_rows``: a stop token
    revealed after only revealed slots), which leaves the texts exactly as without it and saves
    the remaining steps (what an autoregressive ``generate`` saves at EOS). ``on_forward(n)`` is
    called after each segment with the number of plan steps it finished (run, or left out by
    ``stop_early``); over a call they sum to ``len(make_spec(...).plan)`` per batch.

    Returns ``GenerationOutput(tokens [N, gen_length] int32, texts, steps_run, steps_skipped)``;
    texts (with a tokenizer) are cut at the first of ``stop_token_ids`` (default: EOS) and
    decoded with ``skip_special_tokens``.
    """
    ids = prompts_lib.encode_prompts(prompts, tokenizer)
    prompts_lib.check_prompts(cfg, ids)
    suppress_tokens = list(suppress_tokens)
    confidence_suppress_tokens = list(confidence_suppress_tokens)
    if logits_eos_inf:
        suppress_tokens.append(cfg.eos_token_id)
    if confidence_eos_eot_inf:
        eot = eot_token_id if eot_token_id is not None else _special_id(tokenizer, EOT_TOKENS[cfg.family])
        if eot is None:
            raise ValueError("confidence_eos_eot_inf: no EOT id; pass eot_token_id= or a tokenizer that has "
                             f"{EOT_TOKENS[cfg.family]!r}")
        confidence_suppress_tokens += [cfg.eos_token_id, int(eot)]
    spec = make_spec(cfg, gen_length=gen_length, steps=steps, block_length=block_length, temperature=temperature,
                     algorithm=algorithm, schedule=schedule, eps=eps, cfg_scale=cfg_scale, top_p=top_p, top_k=top_k,
                     alg_temp=alg_temp, suppress_tokens=suppress_tokens,
                     confidence_suppress_tokens=confidence_suppress_tokens)
    stop = (cfg.eos_token_id,) if stop_token_ids is None else tuple(int(t) for t in stop_token_ids)
    run_cfg = inference_config(cfg)
    tokens = np.zeros((len(ids), gen_length), dtype=np.int32)
    ran = skipped = 0
    for batch in prompts_lib.plan_batches([len(p) for p in ids], gen_length, batch_size, prompt_buckets):
        chunk = list(batch.indices)
        canvas = prompts_lib.build_canvas(cfg, [ids[i] for i in chunk], chunk, gen_length, batch.length, batch.rows)
        # A device array from the start: every segment then hits the same jit cache entry.
        gen = jax.device_put(np.full((batch.rows, gen_length), cfg.mask_token_id, dtype=np.int32))
        for start, end in segments(spec):
            gen = denoise(run_cfg, spec, params, gen, canvas.input_ids, canvas.uncond_ids, canvas.attention_mask,
                          canvas.position_ids, canvas.gen_index, canvas.row_ids, np.uint32(seed), np.int32(start),
                          np.int32(end))
            ran += end - start
            left = len(spec.plan) - end
            if stop_early and left and settled_rows(np.asarray(gen)[:len(chunk)], cfg.mask_token_id, stop).all():
                skipped += left
                if on_forward is not None:
                    on_forward(end - start + left)
                break
            if on_forward is not None:
                on_forward(end - start)
        tokens[chunk] = np.asarray(gen)[:len(chunk)]
    texts = None
    if tokenizer is not None:
        texts = prompts_lib.decode(tokenizer, tokens, stop, skip_special_tokens)
    return GenerationOutput(tokens=tokens, texts=texts, steps_run=ran, steps_skipped=skipped)
