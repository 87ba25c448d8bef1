"""SFT prompt dropout: each row is trained either as usual or with every non-response position
masked (the prompt-masked view MDU's anchor reads), drawn per row with the given probability."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax.training.config import ObjectiveSection, load_config
from mdu_jax.training.loss import make_loss_fn
from mdu_jax.typed_config import ConfigKeyError
from tests.training.loss_helpers import tiny_batch, tiny_config, tiny_params


def test_each_row_is_trained_with_its_prompt_or_with_the_prompt_masked():
    cfg = tiny_config()
    params = tiny_params(cfg)
    row = {k: v[:1] for k, v in tiny_batch(B=4, T=16).items()}  # one row: prompt of 2 tokens, response, no pad
    hidden = dict(row, input_ids=np.where(row["maskable"], row["input_ids"], cfg.mask_token_id).astype(np.int32))

    def losses(p):
        fn = make_loss_fn(cfg, ObjectiveSection(method="sft", prompt_dropout=p))
        f = jax.jit(lambda b, k: fn(params, None, b, jax.random.key(k), 0, None)[0])
        return f

    with_dropout, plain = losses(0.5), losses(0.0)
    dropped = informative = 0
    for k in range(48):
        got = float(with_dropout(jax.tree.map(jnp.asarray, row), k))
        keep = float(plain(jax.tree.map(jnp.asarray, row), k))
        masked = float(plain(jax.tree.map(jnp.asarray, hidden), k))  # same noise: the prompt is never maskable
        if keep == masked == 0.0:  # no response token masked at this key's small t: nothing to tell apart
            continue
        informative += 1
        assert keep != pytest.approx(masked)
        assert got == pytest.approx(keep, rel=1e-6) or got == pytest.approx(masked, rel=1e-6)
        dropped += got == pytest.approx(masked, rel=1e-6)
    # Binomial(n, 0.5) with n >= 40: within n/5 .. 4n/5 with probability > 0.9999.
    assert informative >= 40 and informative / 5 <= dropped <= 4 * informative / 5


def test_prompt_dropout_is_checked():
    base = {"model": {"init_config": {"model_type": "llada"}}}
    with pytest.raises(ConfigKeyError, match=r"prompt_dropout: expected in \[0, 1\)"):
        load_config(base=base, overrides=["objective.method=sft", "objective.prompt_dropout=1.0"])
    with pytest.raises(ConfigKeyError, match="only for method 'sft'"):
        load_config(base=base, overrides=["objective.prompt_dropout=0.2"])
