"""Small random batches shaped like training batches: prompt | response | right padding."""

from __future__ import annotations

import numpy as np

# (prompt length, response length) per row; T = 10 leaves padding on every row but the first.
LAYOUT = ((2, 8), (3, 4), (1, 5), (4, 3))


def random_batch(seed: int = 0, *, B: int = 3, T: int = 10, V: int = 13, scale: float = 3.0,
                 empty_row: int | None = None, mask_rate: float = 0.5) -> dict[str, np.ndarray]:
    """float32 logits (cond, anchor, ref, extra), int32 ids, bool maskable / masked, fp32 t [B].

    `empty_row`: that row gets no masked position (its response is still maskable).
    """
    rng = np.random.default_rng(seed)
    maskable = np.zeros((B, T), bool)
    for b in range(B):
        p, r = LAYOUT[b % len(LAYOUT)]
        maskable[b, p: p + r] = True
    masked = (rng.random((B, T)) < mask_rate) & maskable
    for b in range(B):  # at least one masked token per row unless asked otherwise
        if not masked[b].any():
            masked[b, np.flatnonzero(maskable[b])[0]] = True
    if empty_row is not None:
        masked[empty_row] = False
    logits = lambda: (scale * rng.standard_normal((B, T, V))).astype(np.float32)  # noqa: E731
    return {
        "cond": logits(), "anchor": logits(), "ref": logits(), "extra": logits(),
        "ids": rng.integers(0, V, (B, T)).astype(np.int32),
        "maskable": maskable, "masked": masked,
        "t": (1e-3 + (1 - 1e-3) * rng.random(B)).astype(np.float32),
    }
