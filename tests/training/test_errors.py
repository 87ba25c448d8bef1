"""Bad runs fail early with a message naming the problem, and never leave a corrupt checkpoint."""

import json
import os

import jax
import numpy as np
import pytest

from mdu_jax.training.config import load_config
from mdu_jax.data import DataError
from mdu_jax.typed_config import ConfigKeyError
from mdu_jax.train import main
from mdu_jax.training import NonFiniteLossError, run
from tests.training.folder_helpers import ONE_DEVICE
from tests.training.helpers import setup_run


@pytest.fixture()
def base(tmp_path):
    return setup_run(tmp_path)


def _no_checkpoint(data):
    # Nothing is written before the config, the model and the data have passed their checks.
    assert not os.path.exists(data["output_dir"])


def test_missing_data_file(base):
    base["data"]["forget_files"] = [base["data"]["forget_files"][0] + ".missing"]
    with pytest.raises(DataError, match=r"forget.json.missing: no such data file"):
        run(load_config(base=base), progress=False)
    _no_checkpoint(base)


def test_empty_forget_set(base, tmp_path):
    (tmp_path / "empty.json").write_text("[]")
    base["data"]["forget_files"] = [str(tmp_path / "empty.json")]
    with pytest.raises(DataError, match=r"the forget set is empty"):
        run(load_config(base=base), progress=False)
    _no_checkpoint(base)


def test_sequence_longer_than_the_maximum(base):
    base["data"]["max_length"] = 12
    with pytest.raises(DataError, match=r"forget row 0: \d+ tokens exceed data.max_length=12"):
        run(load_config(base=base), progress=False)
    _no_checkpoint(base)


def test_mesh_that_does_not_divide_the_devices(base):
    base["parallel"] = {"mesh": {"data": 3, "fsdp": -1, "tensor": 1}}
    with pytest.raises(ConfigKeyError, match=r"parallel.mesh: .* does not divide the 8 available devices"):
        run(load_config(base=base), progress=False)
    _no_checkpoint(base)


def test_batch_that_does_not_split_over_the_mesh(base):
    base["batch_size"] = 6
    with pytest.raises(ConfigKeyError, match=r"batch_size: 6 rows do not split over the mesh's 8"):
        run(load_config(base=base), progress=False)


def test_cli_reports_unknown_key(base, tmp_path, capsys):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base))
    assert main(["--config", str(path), "objective.temprature=2"]) == 2
    assert "unknown config key 'objective.temprature'" in capsys.readouterr().err


def test_with_the_ratio_guard_off_a_nan_loss_still_stops_at_the_step_it_appears(base):
    # One device: the guard does not depend on the layout (lr 1e30 blows up every shard), and the
    # test compiles 16 programs instead of 33 on 8 devices (CPU 31 -> 26 s, on a loaded machine).
    base.update(max_steps=6, checkpoint={"every_steps": 2, "keep": 3, "async_save": False}, parallel=dict(ONE_DEVICE))
    run(load_config(base=base), progress=False, stop_after=3)
    saved = sorted(int(d) for d in os.listdir(os.path.join(base["output_dir"], "checkpoints")) if d.isdigit())
    assert saved == [2, 3]
    # An absurd learning rate with the divergence guard off (tests/training/test_update_guards.py
    # tests it on): step 4 applies weights of ~1e30, step 5's loss is not finite. The run must
    # refuse that update and stop, naming the newest checkpoint, with the checkpoints intact.
    base["optim"].update(lr=1e30, max_update_ratio=0)
    base["checkpoint"]["every_steps"] = 100
    with pytest.raises(NonFiniteLossError, match=r"^optimiser step 5: the loss, the gradient norm or an updated "
                                                 r"parameter is not finite .* The newest checkpoint is "
                                                 r".*/checkpoints/3 \(optimiser step 3\)"):
        run(load_config(base=base), progress=False, resume_anyway=True)
    after = sorted(int(d) for d in os.listdir(os.path.join(base["output_dir"], "checkpoints")) if d.isdigit())
    assert after == saved
    assert not os.path.exists(os.path.join(base["output_dir"], "final"))


def test_a_non_finite_step_does_not_touch_the_state():
    import jax.numpy as jnp
    import optax

    from mdu_jax.training import state as train_state
    from mdu_jax.training import step as train_step

    def loss_fn(params, anchor, batch, key, offset, axis_name):
        return jnp.sum(params["w"]) * jnp.nan, {}

    tx = optax.adam(1e-2)
    state = train_state.init_state({"w": jnp.ones(3)}, tx, 0)
    step = jax.jit(train_step.make_step(loss_fn, tx))
    new, metrics = step(state, None, {"attention_mask": jnp.ones((1, 2), jnp.int32)})
    assert not bool(metrics["finite"])
    np.testing.assert_array_equal(np.asarray(new["params"]["w"]), np.ones(3))
    assert int(new["step"]) == 1
