"""Remat policies and the chunked loss change memory, not numbers: the train loss and its gradients
equal the plain path (no remat, whole-sequence loss).

Tolerances: remat recomputes the same float32 operations, and chunking only changes the order in
which per-position fp32 terms are summed, so the results agree to float32 rounding; XLA may fuse
the recomputed programs differently, hence rtol 1e-5 (about 100 float32 ulps) with an atol of 1e-6
for entries near zero rather than bitwise equality.
"""

import pytest

from mdu_jax.models.config import REMAT_POLICIES
from tests.training.loss_helpers import assert_trees_close, loss_and_grads, tiny_batch, tiny_config, tiny_params

RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def setup():
    cfg = tiny_config("dream")  # GQA + biases + the logits shift: the most code paths
    return cfg, tiny_params(cfg, 0), tiny_params(cfg, 1), tiny_batch()


@pytest.fixture(scope="module")
def plain(setup):
    cfg, params, anchor, batch = setup
    return loss_and_grads(cfg, params, anchor, batch, method="sft")


# The remat policies wrap the decoder layers only, so the one-pass SFT loss exercises them as well
# as MDU does at a lower compile time. One policy per mechanism: saving by primitive (the shipped
# dots_no_batch; "dots" and "full" differ only in what is saved) and saving by name.
@pytest.mark.parametrize("policy", ["dots_no_batch", "save_attn_mlp_out"])
def test_remat_policy_matches_no_remat(setup, plain, policy):
    assert policy in REMAT_POLICIES
    cfg, params, anchor, batch = setup
    loss, aux, grads = loss_and_grads(cfg.replace(remat_policy=policy), params, anchor, batch, method="sft")
    ref_loss, ref_aux, ref_grads = plain
    assert abs(float(loss) - float(ref_loss)) <= RTOL * abs(float(ref_loss))
    assert_trees_close(aux, ref_aux, RTOL, ATOL, "aux")
    assert_trees_close(grads, ref_grads, RTOL, ATOL, f"grads ({policy})")


def test_chunked_mdu_train_loss_matches_whole_sequence(setup):
    cfg, params, anchor, batch = setup
    # chunk 5 does not divide T = 16: the last chunk is zero-padded. The shipped configs also
    # remat the layers; this checks the chunked loss on top of the shipped policy.
    cfg = cfg.replace(remat_policy="dots_no_batch")
    loss, aux, grads = loss_and_grads(cfg, params, anchor, batch, chunk_size=5)
    ref_loss, ref_aux, ref_grads = loss_and_grads(cfg, params, anchor, batch, chunk_size=0)
    assert float(loss) != 0.0
    assert abs(float(loss) - float(ref_loss)) <= RTOL * abs(float(ref_loss))
    assert_trees_close(aux, ref_aux, RTOL, ATOL, "aux")
    assert_trees_close(grads, ref_grads, RTOL, ATOL, "grads (chunk 5)")


def test_pinned_activations_match_unpinned(setup):
    """parallel.shard_activations only adds sharding constraints (8 fake devices, FSDP 8): the
    numbers are those of the unconstrained program up to the order of cross-device sums."""
    import jax

    from mdu_jax import parallel
    from tests.training.loss_helpers import tiny_batch as batch_of

    cfg, params, anchor, _ = setup
    batch = batch_of(B=8)
    mesh = parallel.make_mesh({"data": 1, "fsdp": 8, "tensor": 1}, jax.devices()[:8])
    loss, aux, grads = loss_and_grads(cfg, params, anchor, batch, activation_sharding=parallel.batch_sharding(mesh))
    ref_loss, ref_aux, ref_grads = loss_and_grads(cfg, params, anchor, batch)
    assert abs(float(loss) - float(ref_loss)) <= RTOL * abs(float(ref_loss))
    assert_trees_close(aux, ref_aux, RTOL, ATOL, "aux")
    assert_trees_close(grads, ref_grads, RTOL, ATOL, "grads (pinned activations)")
