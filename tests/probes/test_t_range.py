"""The timestep ablation (objective.t_range): forget rows draw t inside the band, retain rows the
full range, and the band that equals the full range changes nothing. Known answers through the
train loss itself: a band too low to mask anything trains no forget term, and a band at t = 1
trains exactly the KL of fully masked answers, computed here from two plain forward passes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax import diffusion, objectives
from mdu_jax.models.transformer import forward
from mdu_jax.training.config import ObjectiveSection
from mdu_jax.typed_config import ConfigKeyError
from tests.training.loss_helpers import loss_and_grads, tiny_batch, tiny_config, tiny_params


def test_drawn_times_stay_in_the_band_on_band_rows_only():
    key = jax.random.key(0)
    band_rows = np.arange(4096) % 2 == 0
    t = np.asarray(diffusion.sample_times(key, 4096, 1e-3, (0.2, 0.4), band_rows))
    assert t[band_rows].min() >= 0.2 and t[band_rows].max() < 0.4
    # 2048 uniform draws fill the band: the extreme gaps are ~1e-4 of its width, far below 0.01.
    assert t[band_rows].min() < 0.21 and t[band_rows].max() > 0.39
    assert t[~band_rows].min() < 0.05 and t[~band_rows].max() > 0.95  # the full [eps, 1) range
    everyone = np.asarray(diffusion.sample_times(key, 4096, 1e-3, (0.2, 0.4)))
    assert everyone.min() >= 0.2 and everyone.max() < 0.4


def test_noise_batch_masks_at_the_banded_rate():
    ids = np.full((64, 256), 5, np.int32)
    maskable = np.ones((64, 256), bool)
    _, masked, t = diffusion.noise_batch(diffusion.row_keys(jax.random.key(1), 64), ids, maskable, 95,
                                         t_range=(0.7, 0.8))
    t, rate = np.asarray(t), np.asarray(masked).mean(axis=1)
    assert np.all((t >= 0.7) & (t < 0.8))
    # Linear schedule: each token masked with probability t; over 256 tokens the rate's sd is <= 0.03.
    assert np.all(np.abs(rate - t) < 0.15)


def test_full_band_is_bit_identical_to_no_band_and_a_narrow_band_differs():
    cfg = tiny_config("llada")
    params = tiny_params(cfg)
    batch = tiny_batch()
    base, _, _ = loss_and_grads(cfg, params, params, batch)
    same, _, _ = loss_and_grads(cfg, params, params, batch, t_range=[1e-3, 1.0])
    narrow, _, _ = loss_and_grads(cfg, params, params, batch, t_range=[0.05, 0.1])
    assert np.asarray(same).tobytes() == np.asarray(base).tobytes()
    assert float(narrow) != float(base)


def test_a_band_that_masks_nothing_leaves_only_the_retain_term():
    cfg = tiny_config("llada")
    params = tiny_params(cfg)
    batch = tiny_batch()
    _, full, _ = loss_and_grads(cfg, params, params, batch, retain_weight=2.0)
    # The forget rows have 14 and 12 answer tokens, each masked with probability t < 0.002:
    # none at all with probability > 0.95, and none at this key (else the forget term is > 0).
    loss, low, _ = loss_and_grads(cfg, params, params, batch, retain_weight=2.0, t_range=[1e-3, 2e-3])
    assert float(low["forget"]) == 0.0 and float(full["forget"]) > 0.0
    # The retain rows keep their full-range draws: the same retain term to the bit.
    assert np.asarray(low["retain"]).tobytes() == np.asarray(full["retain"]).tobytes()
    assert float(loss) == pytest.approx(2.0 * float(low["retain"]), rel=1e-6)


def test_a_band_at_t_one_trains_the_kl_of_fully_masked_answers():
    cfg = tiny_config("llada")
    params = tiny_params(cfg)
    anchor = tiny_params(cfg, seed=1)  # another model as the anchor: the KL is far from 0
    batch = tiny_batch()
    _, aux, _ = loss_and_grads(cfg, params, anchor, batch, tau=0.5, t_range=[0.9999, 1.0])
    # At t >= 0.9999 each answer token stays unmasked with probability <= 1e-4 (26 forget tokens:
    # all masked at this key, or the numbers below differ). The conditional input is then
    # [prompt | all masks] and the anchor's every position a mask (prompt-masked).
    rows = batch["is_forget"]
    ids, maskable, attn = (jnp.asarray(batch[k][rows]) for k in ("input_ids", "maskable", "attention_mask"))
    mask_id = cfg.mask_token_id
    cond = forward(cfg, params, jnp.where(maskable, mask_id, ids), attn)
    uncond = forward(cfg, anchor, jnp.full_like(ids, mask_id), attn)
    expected = objectives.mdu_loss(cond, uncond, maskable, tau=0.5)
    # fp32 throughout; the loss sums chunk by chunk, the reference in one reduction.
    np.testing.assert_allclose(float(aux["forget"]), float(expected), rtol=1e-5)
    assert float(expected) > 0.01


@pytest.mark.parametrize("band", [[0.5, 0.5], [0.0, 0.5], [0.2, 1.5], [0.1]])
def test_bad_bands_name_the_key(band):
    with pytest.raises(ConfigKeyError, match="objective.t_range"):
        ObjectiveSection(t_range=band).validate()
    ObjectiveSection(t_range=[0.2, 1.0]).validate()
