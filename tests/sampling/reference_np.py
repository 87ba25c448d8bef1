"""Straightforward references of the samplers, written from reference-mdlm section 4.

One prompt at a time, no padding, the model called once per step through ``mdu_jax.forward``
(``tiny.row_logits``), everything else in NumPy float64. The transfer-count formulas are
written with torch where the reference code's float32 arithmetic decides the result (dllm's
scheduler, Dream's linspace and floor).

Tie-break: among equal confidences the lowest position wins (``np.argsort(-c, kind='stable')``).
Random draws, where an algorithm needs them, come from ``draws(step) -> dict`` in slot
coordinates (slot g is canvas position len(prompt) + g), so a test can share them with the
compiled sampler.
"""

import math

import numpy as np
import torch

from tests.sampling.tiny import row_logits

F32_MIN = float(np.finfo(np.float32).min)


# ----------------------------------------------------------------------------- schedules
def official_llada_counts(num_masks: int, steps: int) -> list[int]:
    """LLaDA generate.py: base = n // S for every step, the first n % S steps get one more."""
    base, remainder = num_masks // steps, num_masks % steps
    return [base + 1 if i < remainder else base for i in range(steps)]


def dllm_counts(num_masks: int, steps: int) -> list[int]:
    """dllm get_num_transfer_tokens (linear scheduler, deterministic), zero steps removed."""
    remaining = torch.tensor(num_masks)
    out = []
    for t_int, s_int in zip(range(steps, 0, -1), range(steps - 1, -1, -1)):
        s, t = s_int / steps, t_int / steps
        s_t, t_t = torch.as_tensor(s, dtype=torch.float32), torch.as_tensor(t, dtype=torch.float32)
        alpha_s, alpha_t = 1 - s_t, 1 - t_t
        reverse_mask_prob = ((1 - alpha_s) / (1 - alpha_t)).item()
        x = remaining.to(torch.float64) * (1 - reverse_mask_prob)
        n = torch.minimum(torch.round(x).to(torch.int64), remaining)
        out.append(int(n))
        remaining = remaining - n
        if int(remaining) == 0:
            break
    return [c for c in out if c > 0]


def dream_linspace(steps: int, eps: float) -> torch.Tensor:
    return torch.linspace(1, eps, steps + 1)


def dream_counts(num_masks: int, steps: int, eps: float = 1e-3) -> list[int]:
    """diffusion_generate: int(m * (1 - s/t)) in float32, all remaining on the last step."""
    ts = dream_linspace(steps, eps)
    remaining, out = num_masks, []
    for i in range(steps):
        m = torch.tensor(remaining * 1) / 1  # a float32 tensor, like mask_index.sum() / B
        k = int(m * (1 - ts[i + 1] / ts[i])) if i < steps - 1 else int(m)
        out.append(k)
        remaining -= k
    return out


# ----------------------------------------------------------------------------- helpers
def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_positions(confidence: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-confidence, kind="stable")[:k]


# ----------------------------------------------------------------------------- LLaDA
def llada_generate(cfg, params, prompt, *, gen_length, steps, block_length, schedule="official",
                   remasking="low_confidence", temperature=0.0, cfg_scale=0.0, suppress=(), confidence_suppress=(),
                   draws=None) -> np.ndarray:
    """Generated tokens [gen_length] for one prompt (reference-mdlm 4.1, and 4.2's schedule)."""
    mask = cfg.mask_token_id
    P, G = len(prompt), gen_length
    x = np.asarray(list(prompt) + [mask] * G, dtype=np.int64)
    prompt_index = np.arange(P + G) < P
    if schedule == "official":
        assert G % block_length == 0
        num_blocks = G // block_length
        assert steps % num_blocks == 0
        steps_per_block = steps // num_blocks
    else:
        num_blocks = math.ceil(G / block_length)
        steps_per_block = math.ceil(steps / num_blocks)
    step = 0
    for b in range(num_blocks):
        lo, hi = P + b * block_length, min(P + (b + 1) * block_length, P + G)
        n = int((x[lo:hi] == mask).sum())
        schedule_fn = official_llada_counts if schedule == "official" else dllm_counts
        counts = schedule_fn(n, steps_per_block)
        for k in counts:
            if k == 0:  # a forward whose result is never used
                continue
            if cfg_scale > 0:
                un_x = np.where(prompt_index, mask, x)
                cond, un = row_logits(cfg, params, [x])[0], row_logits(cfg, params, [un_x])[0]
                logits = un + (cfg_scale + 1) * (cond - un)
            else:
                logits = row_logits(cfg, params, [x])[0]
            logits[:, list(suppress)] = -np.inf
            if temperature > 0:
                gumbel = np.zeros_like(logits)
                gumbel[P:] = draws(step)["gumbel"]
                x0 = np.argmax(logits + temperature * gumbel, axis=-1)
            else:
                x0 = np.argmax(logits, axis=-1)
            logits[:, list(confidence_suppress)] = -np.inf
            if remasking == "low_confidence":
                p = softmax(logits)
                x0_p = p[np.arange(len(x)), x0]
            else:
                x0_p = np.full(len(x), -np.inf)
                x0_p[P:] = draws(step)["uniform"]
            x0_p[P + (b + 1) * block_length:] = -np.inf
            is_mask = x == mask
            x0 = np.where(is_mask, x0, x)
            confidence = np.where(is_mask, x0_p, -np.inf)
            chosen = top_positions(confidence, k)
            x[chosen] = x0[chosen]
            step += 1
    return x[P:]


# ----------------------------------------------------------------------------- Dream
def dream_sample_tokens(logits: np.ndarray, *, top_p=None, top_k=None, kind="maskgit_plus"):
    """Dream's sample_tokens at temperature 0 on logits [n, V]: (confidence [n], tokens [n])."""
    logits = logits.copy()
    if top_p is not None and top_p < 1:
        order = np.argsort(-logits, axis=-1, kind="stable")
        sorted_logits = np.take_along_axis(logits, order, axis=-1)
        cumulative = np.cumsum(softmax(sorted_logits), axis=-1)
        remove = cumulative > top_p
        remove[:, 1:] = remove[:, :-1].copy()
        remove[:, 0] = False
        removed = np.zeros_like(remove)
        np.put_along_axis(removed, order, remove, axis=-1)
        logits[removed] = F32_MIN
    if top_k is not None:
        kth = np.sort(logits, axis=-1)[:, ::-1][:, top_k - 1:top_k]
        logits[logits < kth] = F32_MIN
    probs = softmax(logits)
    tokens = np.argmax(probs, axis=-1)
    confidence = probs.max(axis=-1)
    if kind == "topk_margin":
        sorted_probs = np.sort(probs, axis=-1)[:, ::-1]
        confidence = sorted_probs[:, 0] - sorted_probs[:, 1]
    elif kind == "entropy":
        confidence = np.sum(probs * np.log(probs + 1e-10), axis=-1)
    return confidence, tokens


def dream_generate(cfg, params, prompt, *, gen_length, steps, alg, eps=1e-3, top_p=None, top_k=None,
                   draws=None) -> np.ndarray:
    """Generated tokens [gen_length] for one prompt at temperature 0 (reference-mdlm 4.3).

    ``row_logits`` returns Dream's logits already right-shifted (forward does it), so
    ``logits[i]`` is the prediction for position i, as after diffusion_generate's torch.cat.
    """
    mask = cfg.mask_token_id
    P, G = len(prompt), gen_length
    x = np.asarray(list(prompt) + [mask] * G, dtype=np.int64)
    ts = dream_linspace(steps, eps)
    for i in range(steps):
        is_mask = x == mask
        logits = row_logits(cfg, params, [x])[0]
        t, s = ts[i], ts[i + 1]
        if alg == "origin":
            p_transfer = (1 - s / t) if i < steps - 1 else torch.tensor(1.0)
            u = np.zeros(len(x), dtype=np.float32)
            u[P:] = draws(i)["uniform"]
            reveal = is_mask & (torch.from_numpy(u) < p_transfer).numpy()
            _, tokens = dream_sample_tokens(logits, top_p=top_p, top_k=top_k)
            x[reveal] = tokens[reveal]
        else:
            confidence, tokens = dream_sample_tokens(logits[is_mask], top_p=top_p, top_k=top_k, kind=alg)
            num_mask_token = torch.tensor(int(is_mask.sum())) / 1
            k = int(num_mask_token * (1 - s / t)) if i < steps - 1 else int(num_mask_token)
            full_confidence = np.full(len(x), -np.inf)
            full_confidence[is_mask] = confidence
            if k > 0:
                x_ = np.full(len(x), mask)
                x_[is_mask] = tokens
                chosen = top_positions(full_confidence, k)
                x[chosen] = x_[chosen]
    return x[P:]
