"""An update is applied only if it is sound; runs stop saying what exists (issue 16 item 3).

Config numbers must be finite. The step keeps its state when the loss, the gradient norm or an
updated parameter is not finite, or when the update's norm exceeds ``optim.max_update_ratio`` x
the parameters' norm (the divergence guard; lr = 1e30 once trained for a step and saved weights of
about 1e30). A stopped run names the newest checkpoint only if there is one.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mdu_jax.training as training
from mdu_jax.training import state as train_state
from mdu_jax.training import step as train_step
from mdu_jax.training.config import load_config
from mdu_jax.typed_config import ConfigKeyError
from tests.training.folder_helpers import checkpoint_folders, checkpoint_params, metrics_rows, one_device_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


@pytest.mark.parametrize("override,key", [
    ("optim.lr=nan", "optim.lr"), ("optim.lr=.inf", "optim.lr"), ("optim.lr=-inf", "optim.lr"),
    ("optim.lr=1e400", "optim.lr"), ("objective.tau=.nan", "objective.tau"), ("optim.clip_norm=inf", "optim.clip_norm"),
    ("epochs=nan", "epochs"),
])
def test_non_finite_config_numbers_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigKeyError, match=rf"^{key}: expected a finite number, got -?(nan|inf)"):
        load_config(os.path.join(CONFIGS, "tofu_llada8b.yaml"), [override])


def _sgd_step(lr, max_update_ratio=0.0):
    """One jitted step of plain SGD on w = [1, 2, 3] with loss sum(w): every update is -lr."""
    def loss_fn(params, anchor, batch, key, offset, axis_name):
        return jnp.sum(params["w"]), {}

    tx = optax.sgd(lr)
    state = train_state.init_state({"w": jnp.asarray([1.0, 2.0, 3.0])}, tx, 0)
    step = jax.jit(train_step.make_step(loss_fn, tx, max_update_ratio=max_update_ratio))
    return step(state, None, {"attention_mask": jnp.ones((1, 2), jnp.int32)})


def test_an_update_that_makes_a_parameter_infinite_is_not_applied():
    with np.errstate(over="ignore"):
        new, m = _sgd_step(1e39)  # a finite Python float, inf in float32: loss and gradient stay finite
    assert bool(jnp.isfinite(m["loss"])) and bool(jnp.isfinite(m["grad_norm"]))
    assert not bool(m["finite"]) and not bool(m["applied"])
    np.testing.assert_array_equal(np.asarray(new["params"]["w"]), [1.0, 2.0, 3.0])


def test_the_divergence_guard_compares_the_update_norm_with_the_parameter_norm():
    # ||update|| = lr * sqrt(3); ||w|| = sqrt(14): the ratio is lr * sqrt(3 / 14).
    ratio = np.sqrt(3 / 14)
    applied, m = _sgd_step(1.0 / ratio * 0.99, max_update_ratio=1.0)
    assert bool(m["applied"]) and float(m["update_ratio"]) == pytest.approx(0.99, rel=1e-5)
    kept, m = _sgd_step(1.0 / ratio * 1.01, max_update_ratio=1.0)
    assert bool(m["finite"]) and not bool(m["applied"])
    np.testing.assert_array_equal(np.asarray(kept["params"]["w"]), [1.0, 2.0, 3.0])
    applied, m = _sgd_step(1e30, max_update_ratio=0.0)  # 0: the guard is off
    assert bool(m["applied"])
    _, m = _sgd_step(1e30, max_update_ratio=1.0)
    assert np.isfinite(float(m["update_ratio"])) and float(m["update_ratio"]) > 1e29  # no overflow in the norm


def _exploding(root, lr=1e30):
    return one_device_config(root, max_steps=3, optim={"lr": lr, "grad_accum": 2, "warmup_ratio": 0.0},
                             checkpoint={"every_steps": 1, "keep": 5, "async_save": False})


def test_lr_1e30_stops_before_any_update_and_says_there_is_no_checkpoint(tmp_path):
    base = _exploding(tmp_path)
    with pytest.raises(training.DivergenceError) as e:
        training.run(load_config(base=base), progress=False)
    text = str(e.value)
    assert text.startswith("optimiser step 1 (micro-step 2, grad_accum 2): the update's norm is")
    assert "No checkpoint had been written yet" in text and "newest checkpoint is" not in text
    assert checkpoint_folders(base["output_dir"]) == []
    assert not os.path.exists(os.path.join(base["output_dir"], "final"))


def test_a_stop_names_the_newest_checkpoint_whose_weights_are_sound(tmp_path):
    base = _exploding(tmp_path, lr=1e-3)
    training.run(load_config(base=base), progress=False, stop_after=1)
    assert checkpoint_folders(base["output_dir"]) == [1]
    base["optim"]["lr"] = 1e30
    with pytest.raises(training.DivergenceError) as e:
        training.run(load_config(base=base), progress=False, resume_anyway=True)
    text = str(e.value)
    assert text.startswith("optimiser step 2 (micro-step 4, grad_accum 2)")
    assert f"The newest checkpoint is {base['output_dir']}/checkpoints/1 (optimiser step 1)" in text
    assert checkpoint_folders(base["output_dir"]) == [1]
    largest = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(checkpoint_params(base["output_dir"], 1)))
    assert largest < 10, largest  # the tiny model's weights are O(1); an lr-1e30 step would leave ~1e30
    assert [r["step"] for r in metrics_rows(base["output_dir"])] == [1]


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e-5, 1.0, 1e10, 1e19, 1e25, 1e35])
def test_the_guard_norms_hold_at_every_magnitude(scale):
    # One float32 pass per leaf at three power-of-two scales (training/step.py): the norm must match
    # float64 where a plain float32 sum of squares would underflow (1e-30) or overflow (1e25, 1e35).
    # 1e-5 relative: float32 rounding of sums of 3000 squares.
    rng = np.random.default_rng(0)
    update = {"a": (rng.standard_normal((3, 700)) * scale).astype(np.float32),
              "b": (rng.standard_normal(300) * scale).astype(np.float32)}
    param = jax.tree.map(lambda x: np.ones_like(x) * 2, update)
    norm_u, norm_p, finite = train_step._norms_and_finite(update, param, update)
    exact = np.sqrt(sum(np.sum(np.square(x.astype(np.float64))) for x in update.values()))
    assert float(norm_u) == pytest.approx(exact, rel=1e-5)
    assert float(norm_p) == pytest.approx(2 * np.sqrt(2400), rel=1e-6)
    assert bool(finite)
    update["b"][5] = np.nan
    assert not bool(train_step._norms_and_finite(update, param, update)[2])
