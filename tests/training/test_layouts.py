"""The same 5 steps give the same losses, gradient norms and parameters on every device layout
(8 fake CPU devices)."""

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


# Metrics every layout must reproduce. grad_norm is the global norm of the gradient before
# clipping: clipped AdamW is invariant to a constant factor on the gradient (psum vs pmean over the
# devices, a missing 1/devices), so the parameters alone cannot show such a bug; the norm does.
COMPARED_METRICS = ("loss", "grad_norm", "forget", "retain")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per layout: the logged metrics of each step and the final params."""
    root = tmp_path_factory.mktemp("layouts")
    # GQA + biases: every sharding rule is exercised. rope_theta 100 instead of Dream's 1e6: at
    # 1e6 the lowest RoPE frequency of this 8-wide head turns by 3e-5 rad per token, so over 32
    # tokens those key-bias dimensions shift every logit of a query row almost equally, softmax
    # cancels them and their gradient is rounding noise that Adam scales up to steps of ~lr
    # (measured: layouts then differ there by 6e-6 while every other parameter agrees to 7e-8). At 100
    # every frequency turns by >= 0.03 rad per token and every parameter has a real gradient.
    base = setup_run(root, "dream", rope_theta=100.0)
    out = {}
    for name, change in LAYOUTS.items():
        data = copy.deepcopy(base)
        data.update(change)
        data["data"] = {**data["data"], "buckets": [32]}  # one program per layout: compile time dominates
        data["output_dir"] = str(root / name.replace(" ", "_"))
        res = run(load_config(base=data), progress=False)
        out[name] = {"metrics": res.metrics, "params": jax.device_get(res.params)}
    return out


@pytest.fixture(scope="module")
def results(runs):
    """(losses, final params) per layout."""
    return {name: ([m["loss"] for m in r["metrics"]], r["params"]) for name, r in runs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in LAYOUTS if n != "1 device"])
def test_layout_matches_one_device(runs, name):
    """Same losses, loss parts and gradient norms at every step, and the same final parameters.

    rtol 1e-5: the layouts sum the same float32 terms in different orders (cross-device
    reductions); measured worst case over the five layouts: 1.2e-6 relative on the loss parts,
    6e-7 on the gradient norm, 7e-8 absolute on the parameters (values ~0.1-1). A constant factor
    on the gradient (psum -> pmean over 8 devices) moves the norm 8x."""
    ref, got = runs["1 device"], runs[name]
    assert len(got["metrics"]) == len(ref["metrics"]) == 5
    for key in COMPARED_METRICS:
        np.testing.assert_allclose([m[key] for m in got["metrics"]], [m[key] for m in ref["metrics"]], rtol=1e-5,
                                   err_msg=key)
    assert [m["tokens"] for m in got["metrics"]] == [m["tokens"] for m in ref["metrics"]]
    for path, a in jax.tree_util.tree_leaves_with_path(got["params"]):
        keys = tuple(k.key for k in path)
        b = ref["params"]
        for k in keys:
            b = b[k]
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
