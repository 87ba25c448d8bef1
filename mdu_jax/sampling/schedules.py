"""How many masked tokens each denoising step reveals: the three reference schedules.

All schedules are computed on the host in NumPy, once per sampler configuration, and enter the
compiled loop as constants. Because every row of a batch starts a block with the same number of
masks, the counts are the same for every row (reference-mdlm 4, pitfall 12).

- ``llada_transfer_counts``: official LLaDA (``generate.py``): an even split, the remainder
  going to the early steps.
- ``dllm_transfer_counts``: dllm's ``get_num_transfer_tokens`` with the linear scheduler:
  sequential ``round(remaining * (1 - s/t))`` with round-half-to-even, steps that reveal nothing
  removed.
- ``dream_transfer_counts``: Dream's ``diffusion_generate``: ``floor(masks * (1 - s/t))`` on
  ``linspace(1, eps, steps + 1)`` in float32, the last step taking what is left.
"""

from __future__ import annotations

import math

import numpy as np


def _check(num_masks: int, steps: int) -> None:
    if not isinstance(num_masks, (int, np.integer)) or num_masks < 0:
        raise ValueError(f"num_masks: expected an integer >= 0, got {num_masks!r}")
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps: expected an integer >= 1, got {steps!r}")


def llada_transfer_counts(num_masks: int, steps: int) -> np.ndarray:
    """Official LLaDA counts, int64 [steps]: ``num_masks // steps`` each, plus one on the first
    ``num_masks % steps`` steps. Zero entries are kept (they happen when steps > num_masks)."""
    _check(num_masks, steps)
    base, remainder = divmod(int(num_masks), int(steps))
    return base + (np.arange(steps) < remainder).astype(np.int64)


def _linear_reverse_transfer_prob(k: int, steps: int) -> float:
    """dllm's ``1 - reverse_mask_prob(s=(k-1)/S, t=k/S)`` for the linear scheduler, with its
    precision: s and t go through float32 tensors and the ratio (1-a(s))/(1-a(t)) is float32,
    then ``1 - ratio`` is a Python float. Mathematically 1/k; the float path decides ties."""
    one = np.float32(1.0)
    s = np.float32((k - 1) / steps)
    t = np.float32(k / steps)
    ratio = np.float32((one - (one - s)) / (one - (one - t)))
    return 1.0 - float(ratio)


def dllm_transfer_counts(num_masks: int, steps: int) -> np.ndarray:
    """dllm counts, int64 [effective_steps] with every entry > 0 (zero steps removed).

    For k = steps..1: ``count = round_half_even(remaining * p_k)`` with p_k = 1/k (computed as
    dllm does), capped at ``remaining``; stop when nothing remains. 128 masks in 256 steps give
    0, 1, 0, 1, ... which compacts to 128 single-token steps.
    """
    _check(num_masks, steps)
    remaining = int(num_masks)
    counts = []
    for k in range(steps, 0, -1):
        if remaining == 0:
            break
        expected = float(np.float64(remaining) * _linear_reverse_transfer_prob(k, steps))
        count = min(int(np.round(expected)), remaining)  # np.round rounds half to even, as torch.round
        remaining -= count
        counts.append(count)
    counts = np.asarray(counts, dtype=np.int64)
    return counts[counts > 0]


def dream_timesteps(steps: int, eps: float = 1e-3) -> np.ndarray:
    """``torch.linspace(1, eps, steps + 1)`` in float32, bit for bit (the CPU kernel).

    torch computes a float32 step and fills the first half forwards from 1 and the second half
    backwards from eps, each value as one fused multiply-add rounded to float32 (done here in
    float64, which is exact before the final rounding for these magnitudes).
    """
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps: expected an integer >= 1, got {steps!r}")
    n = int(steps) + 1
    start, end = np.float32(1.0), np.float32(eps)
    step = np.float32((end - start) / np.float32(n - 1))
    i = np.arange(n, dtype=np.float64)
    forward = np.float64(start) + np.float64(step) * i
    backward = np.float64(end) - np.float64(step) * (n - 1 - i)
    return np.where(np.arange(n) < n // 2, forward, backward).astype(np.float32)


def dream_transfer_counts(num_masks: int, steps: int, eps: float = 1e-3) -> np.ndarray:
    """Dream counts, int64 [steps] (zeros kept): at step i < steps-1,
    ``int(m_i * (1 - s/t))`` in float32 with t = ts[i], s = ts[i+1] and m_i the masks left;
    the last step reveals all of m_i. With steps == num_masks the first count is 0."""
    _check(num_masks, steps)
    ts = dream_timesteps(steps, eps)
    remaining = int(num_masks)
    counts = np.zeros(steps, dtype=np.int64)
    for i in range(steps):
        if i < steps - 1:
            frac = np.float32(np.float32(1.0) - ts[i + 1] / ts[i])
            count = int(np.float32(np.float32(remaining) * frac))
        else:
            count = remaining
        count = min(count, remaining)
        counts[i] = count
        remaining -= count
    return counts


def dream_reveal_probs(steps: int, eps: float = 1e-3) -> np.ndarray:
    """Dream 'origin' per-step reveal probability, float32 [steps]: ``1 - s/t``, and 1 on the
    last step."""
    ts = dream_timesteps(steps, eps)
    probs = (np.float32(1.0) - ts[1:] / ts[:-1]).astype(np.float32)
    probs[-1] = 1.0
    return probs


def llada_plan(gen_length: int, block_length: int, steps: int, schedule: str = "official"):
    """The LLaDA step plan: a tuple of (block index, count) for every step that reveals tokens.

    ``schedule='official'`` requires ``gen_length % block_length == 0`` and
    ``steps % num_blocks == 0`` (LLaDA asserts both) and splits each block's masks with
    ``llada_transfer_counts``. ``schedule='dllm'`` uses ``ceil`` for the number of blocks and for
    the steps per block, the last block may be shorter, and counts come from
    ``dllm_transfer_counts``. Steps that reveal nothing leave the canvas unchanged (the models
    are not time-conditioned), so they are dropped.
    """
    for name, value in (("gen_length", gen_length), ("block_length", block_length), ("steps", steps)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    if schedule == "official":
        if gen_length % block_length:
            raise ValueError(f"block_length: {block_length} does not divide gen_length={gen_length} "
                             "(required by the official LLaDA schedule; schedule='dllm' allows it)")
        num_blocks = gen_length // block_length
        if steps % num_blocks:
            raise ValueError(f"steps: {steps} is not a multiple of the number of blocks {num_blocks} "
                             "(required by the official LLaDA schedule; schedule='dllm' allows it)")
        per_block = [llada_transfer_counts(block_length, steps // num_blocks) for _ in range(num_blocks)]
    elif schedule == "dllm":
        num_blocks = math.ceil(gen_length / block_length)
        steps_per_block = math.ceil(steps / num_blocks)
        per_block = [dllm_transfer_counts(min(block_length, gen_length - b * block_length), steps_per_block)
                     for b in range(num_blocks)]
    else:
        raise ValueError(f"schedule: unknown {schedule!r}; expected 'official' or 'dllm'")
    return tuple((b, int(c)) for b, counts in enumerate(per_block) for c in counts if c > 0)
