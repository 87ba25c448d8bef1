"""Independent float64 NumPy versions of the objectives, written from the formulas in
reference-mdlm.md sections 3 and 6 and the papers (not from mdu_jax). Loops where clarity helps.

Exclusion is done by *deleting* the excluded vocabulary columns (mdu_jax masks them instead),
so the two implementations share no trick.
"""

from __future__ import annotations

import math

import numpy as np


def log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def log_sigmoid(x):
    x = np.asarray(x, np.float64)
    return -np.logaddexp(0.0, -x)


# ----------------------------------------------------------------------------- MDU

def divergence(lc, lu, *, tau, eta, kind, exclude=None):
    """Per-position divergence [B, T] between softmax(lc) and softmax(tau (lu - eta (lc - lu)))."""
    lc = np.asarray(lc, np.float64)
    lu = np.asarray(lu, np.float64)
    target = tau * (lu - eta * (lc - lu))
    if exclude is not None and len(exclude):
        kept = np.setdiff1d(np.arange(lc.shape[-1]), np.asarray(exclude))
        lc, target = lc[..., kept], target[..., kept]
    lpc, lpt = log_softmax(lc), log_softmax(target)
    pc, pt = np.exp(lpc), np.exp(lpt)
    if kind == "forward":
        return (pc * (lpc - lpt)).sum(-1)
    if kind == "reverse":
        return (pt * (lpt - lpc)).sum(-1)
    assert kind == "js"
    lm = np.log(np.maximum(0.5 * (pc + pt), 1e-12))
    return 0.5 * (pc * (lpc - lm)).sum(-1) + 0.5 * (pt * (lpt - lm)).sum(-1)


def mdu_loss(lc, lu, masked, **kw):
    d = divergence(lc, lu, **kw)
    m = np.asarray(masked, bool)
    return d[m].sum() / max(1, m.sum())


# ----------------------------------------------------------------------------- MDLM

def alpha(t, schedule):
    t = np.asarray(t, np.float64)
    return 1.0 - t if schedule == "linear" else 1.0 - np.cos(math.pi / 2 * (1.0 - t))


def alpha_prime(t, schedule):
    t = np.asarray(t, np.float64)
    return -np.ones_like(t) if schedule == "linear" else -(math.pi / 2) * np.sin(math.pi / 2 * (1.0 - t))


def time_weight(t, schedule):
    return -alpha_prime(t, schedule) / (1.0 - alpha(t, schedule) + 1e-6)


def cross_entropy(logits, targets):
    lp = log_softmax(logits)
    return np.take_along_axis(-lp, np.asarray(targets)[..., None], -1)[..., 0]


def cart(masked, p=0.3):
    masked = np.asarray(masked, bool)
    B, T = masked.shape
    w = np.zeros((B, T))
    for b in range(B):
        for i in range(T):
            if masked[b, i]:
                w[b, i] = sum(0.5 * p * (1 - p) ** (abs(i - j) - 1)
                              for j in range(T) if j != i and not masked[b, j])
    return w


def weights(masked, t, weight, schedule="linear", p=0.3):
    masked = np.asarray(masked, bool)
    if weight == "scheduler":
        return np.repeat(time_weight(t, schedule)[:, None], masked.shape[1], 1)
    if weight == "uniform":
        return np.ones(masked.shape)
    return cart(masked, p)


def row_nll(logits, targets, masked, maskable, t, weight="scheduler", schedule="linear", p=0.3):
    """S_b = sum_i w_i CE_i [masked_i and maskable_i]."""
    m = np.asarray(masked, bool) & np.asarray(maskable, bool)
    w = weights(m, t, weight, schedule, p)
    return (w * cross_entropy(logits, targets) * m).sum(-1)


def normalise(S, maskable, norm, rows=None):
    S = np.asarray(S, np.float64)
    B = S.shape[0]
    rows = np.ones(B, bool) if rows is None else np.asarray(rows, bool)
    n = np.asarray(maskable, bool).sum(-1).astype(np.float64)
    if norm == "token":
        return S[rows].sum() / max(1.0, n[rows].sum())
    if norm == "sequence":
        return sum(S[b] / max(1.0, n[b]) for b in range(B) if rows[b]) / max(1, rows.sum())
    return S[rows].sum() / max(1, rows.sum())


def mdlm_loss(logits, targets, masked, maskable, t, weight="scheduler", schedule="linear",
              norm="token", p=0.3, rows=None):
    S = row_nll(logits, targets, masked, maskable, t, weight, schedule, p)
    return normalise(S, maskable, norm, rows)


# ----------------------------------------------------------------------------- baselines

def npo_per_sequence(S, S_ref, rows, beta):
    vals = [-(2 / beta) * log_sigmoid(beta * (S[b] - S_ref[b])) for b in range(len(S)) if rows[b]]
    return sum(vals) / max(1, len(vals))


def npo_batch(S, S_ref, maskable, rows, beta):
    n = np.asarray(maskable, bool).sum(-1)
    L = S[rows].sum() / max(1, n[rows].sum())
    L_ref = S_ref[rows].sum() / max(1, n[rows].sum())
    return -(2 / beta) * log_sigmoid(beta * (L - L_ref))


def simnpo(S, maskable, rows, beta, gamma):
    n = np.asarray(maskable, bool).sum(-1)
    vals = [-(2 / beta) * log_sigmoid(beta * S[b] / max(1, n[b]) - gamma) for b in range(len(S)) if rows[b]]
    return sum(vals) / max(1, len(vals))


def dpo(Sc, Sc_ref, Sr, Sr_ref, rows, beta):
    vals = [-log_sigmoid(beta * ((-Sc[b] + Sc_ref[b]) - (-Sr[b] + Sr_ref[b])))
            for b in range(len(Sc)) if rows[b]]
    return sum(vals) / max(1, len(vals))


def entropy_gap(logits, masked):
    """mean over masked positions of log V - H(softmax(logits))."""
    lp = log_softmax(logits)
    V = lp.shape[-1]
    kl = np.log(V) + (np.exp(lp) * lp).sum(-1)
    m = np.asarray(masked, bool)
    return kl[m].sum() / max(1, m.sum())
