"""The same 5 steps give the same losses and parameters on every device layout (8 fake CPU devices)."""

import copy

import jax
import numpy as np
import pytest

from mdu_jax.checkpoints import load_pretrained
from mdu_jax.training.config import load_config
from mdu_jax.training import run
from tests.training.helpers import setup_run

LAYOUTS = {
    "1 device": {"parallel": {"num_devices": 1, "mesh": {"data": 1, "fsdp": 1, "tensor": 1}}},
    "fsdp 8": {"parallel": {"mesh": {"data": 1, "fsdp": 8, "tensor": 1}}},
    "data 2 x fsdp 4": {"parallel": {"mesh": {"data": 2, "fsdp": 4, "tensor": 1}}},
    "data 2 x fsdp 2 x tensor 2": {"parallel": {"mesh": {"data": 2, "fsdp": 2, "tensor": 2}}},
    "pmap 8": {"parallel": {"step": "pmap"}},
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    base = setup_run(root, "dream")  # GQA + biases: every sharding rule is exercised
    out = {}
    for name, change in LAYOUTS.items():
        data = copy.deepcopy(base)
        data.update(change)
        data["data"] = {**data["data"], "buckets": [32]}  # one program per layout: compile time dominates
        data["output_dir"] = str(root / name.replace(" ", "_"))
        res = run(load_config(base=data), progress=False)
        out[name] = ([m["loss"] for m in res.metrics], jax.device_get(res.params))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in LAYOUTS if n != "1 device"])
def test_layout_matches_one_device(results, name):
    ref_losses, ref_params = results["1 device"]
    losses, params = results[name]
    assert len(losses) == 5
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for path, a in jax.tree_util.tree_leaves_with_path(params):
        keys = tuple(k.key for k in path)
        b = ref_params
        for k in keys:
            b = b[k]
        if keys == ("layers", "k", "bias"):
            # The key bias shifts every logit of a query row equally, so softmax cancels it and its
            # true gradient is exactly 0: what is left is rounding noise, which Adam normalises to
            # steps of up to lr. Bound it by lr x steps instead of a relative tolerance.
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-3 * 5)
        else:
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7, err_msg=str(keys))


@pytest.mark.slow
def test_training_changes_the_parameters(results, tmp_path):
    """Every weight matrix moves from its initial value by about what Adam's steps at lr 1e-3 make
    (step 1 has lr 0 in the warmup; each later step moves an element by up to ~lr): a run at lr 0,
    or one that never applies its updates, fails. Losses alone cannot tell: each step draws new masks."""
    base = setup_run(tmp_path, "dream")  # the seeded checkpoint the layouts start from, written again
    _, initial, _ = load_pretrained(base["model"]["path"], dtype="float32", param_dtype="float32")
    losses, params = results["1 device"]
    assert np.all(np.isfinite(losses))
    for path, before in jax.tree_util.tree_leaves_with_path(jax.device_get(initial)):
        after = params
        for k in path:
            after = after[k.key]
        moved = float(np.max(np.abs(np.asarray(after, np.float64) - np.asarray(before, np.float64))))
        if np.ndim(before) >= 2:
            assert moved > 1e-4, (jax.tree_util.keystr(path), moved)
