"""The timestep ablation (objective.t_range): forget rows draw t inside the band, retain rows the
full range, and the band that equals the full range changes nothing."""

import jax
import numpy as np
import pytest

from mdu_jax import diffusion
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


@pytest.mark.parametrize("band", [[0.5, 0.5], [0.0, 0.5], [0.2, 1.5], [0.1]])
def test_bad_bands_name_the_key(band):
    with pytest.raises(ConfigKeyError, match="objective.t_range"):
        ObjectiveSection(t_range=band).validate()
    ObjectiveSection(t_range=[0.2, 1.0]).validate()
