"""Schedules, time sampling and the forward masking process."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax import diffusion
from tests.objectives.quick_jit import quick_jit
from tests.objectives import formulas_np as F


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_matches_formula_and_its_derivative(schedule):
    t32 = np.linspace(0.001, 0.999, 41).astype(np.float32)
    t = t32.astype(np.float64)  # the formulas at exactly the fp32 inputs the code sees
    np.testing.assert_allclose(diffusion.alpha(t, schedule), F.alpha(t, schedule), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(diffusion.alpha_prime(t, schedule), F.alpha_prime(t, schedule), rtol=1e-5)
    np.testing.assert_allclose(diffusion.mask_probability(t, schedule), 1 - F.alpha(t, schedule),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(diffusion.loss_weight(t, schedule), F.time_weight(t, schedule), rtol=1e-5)
    # alpha' really is the derivative of alpha (central differences in fp64), and alpha runs 1 -> 0
    h = 1e-6
    fd = (F.alpha(t + h, schedule) - F.alpha(t - h, schedule)) / (2 * h)
    np.testing.assert_allclose(F.alpha_prime(t, schedule), fd, rtol=1e-6)
    np.testing.assert_allclose(diffusion.alpha(np.array([0.0, 1.0]), schedule), [1.0, 0.0], atol=1e-7)


def test_linear_weight_is_one_over_t():
    t = np.array([0.001, 0.1, 0.5, 1.0], np.float32)
    np.testing.assert_allclose(diffusion.loss_weight(t), 1.0 / (t + 1e-6), rtol=1e-6)


def test_unknown_schedule_is_an_error():
    with pytest.raises(ValueError, match="schedule"):
        diffusion.loss_weight(0.5, "quadratic")


def test_sample_times_are_uniform_on_eps_to_one():
    n, eps = 20000, 1e-3
    t = np.asarray(quick_jit(diffusion.sample_times, static_argnums=(1, 2))(jax.random.key(0), n, eps))
    assert t.dtype == np.float32 and t.shape == (n,)
    assert t.min() >= eps and t.max() < 1.0
    # mean and variance of U(eps, 1), within 5 standard errors
    mean, var = (1 + eps) / 2, (1 - eps) ** 2 / 12
    assert abs(t.mean() - mean) < 5 * np.sqrt(var / n)
    t2 = np.asarray(diffusion.sample_times(jax.random.key(0), n, eps=0.5))
    assert t2.min() >= 0.5


def test_forward_mask_never_masks_prompt_or_padding_and_masks_at_rate_p():
    B, T, MASK = 4, 3000, 7
    ids = np.random.default_rng(0).integers(0, 7, (B, T)).astype(np.int32)
    maskable = np.zeros((B, T), bool)
    maskable[:, 100:2600] = True  # prompt | response | padding
    t = np.array([0.05, 0.3, 0.6, 0.95], np.float32)
    for schedule in ("linear", "cosine"):
        f = quick_jit(lambda k, i, m, tt: diffusion.forward_mask(k, i, m, tt, MASK, schedule))
        noised, masked = map(np.asarray, f(jax.random.key(1), ids, maskable, t))
        assert not masked[~maskable].any()
        np.testing.assert_array_equal(noised[masked], MASK)
        np.testing.assert_array_equal(noised[~masked], ids[~masked])
        p = 1 - F.alpha(t, schedule)
        n = maskable.sum(1)
        rate = masked.sum(1) / n
        assert np.all(np.abs(rate - p) < 5 * np.sqrt(p * (1 - p) / n)), (schedule, rate, p)


def test_row_keys_make_each_rows_noise_independent_of_the_batch_split():
    B, T, MASK = 4, 16, 9
    ids = np.arange(B * T, dtype=np.int32).reshape(B, T) % 9
    maskable = np.ones((B, T), bool)
    key = jax.random.key(3)
    noise = quick_jit(lambda k, i, m: diffusion.noise_batch(k, i, m, MASK))
    whole = noise(diffusion.row_keys(key, B), ids, maskable)
    second_half = noise(diffusion.row_keys(key, 2, offset=2), ids[2:], maskable[2:])
    for a, b in zip(whole, second_half):
        np.testing.assert_array_equal(np.asarray(a)[2:], b)
    # rows do differ from each other
    assert len({tuple(np.asarray(whole[1])[i]) for i in range(B)}) == B


def test_noise_batch_with_one_key_returns_consistent_times_and_masks():
    B, T, MASK = 3, 50, 9
    ids = np.zeros((B, T), np.int32)
    maskable = np.ones((B, T), bool)
    noised, masked, t = quick_jit(diffusion.noise_batch, static_argnums=3)(jax.random.key(4), ids, maskable, MASK)
    assert t.shape == (B,) and masked.shape == (B, T) and noised.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(noised) == MASK, masked)


def test_raw_uint32_row_keys_are_accepted():
    keys = jax.random.key_data(diffusion.row_keys(jax.random.key(5), 3))
    assert keys.shape == (3, 2)
    t_raw = diffusion.sample_times(keys, 3)
    t_typed = diffusion.sample_times(jax.random.wrap_key_data(keys), 3)
    np.testing.assert_array_equal(t_raw, t_typed)
    with pytest.raises(ValueError, match="row keys"):
        diffusion.sample_times(keys, 4)
