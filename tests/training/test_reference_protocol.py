"""The paper presets (configs/paper/) train as the MDU reference code does, on tiny cases.

Each test builds the preset's loss / optimiser the way ``training.loop`` does and compares one
step with a hand-written computation of the reference's rule (reference-mdlm 6.1, 6.3; HF's
Trainer for accumulation), written here from the rule, not from the project's functions:

- padding: the reference's collator right-pads every micro-batch with EOS to its longest row and
  drops the attention mask, so the pads are visible in both passes and the anchor pass turns
  them into mask tokens like the question (labels -100 everywhere but the response);
- accumulation: HF's Trainer divides LLaDA's micro-batch losses by the accumulation steps but
  sums Dream's (its forward takes **loss_kwargs), and clips the accumulated gradient at 1.0 with
  torch's rule ``g * min(1, max_norm / (norm + 1e-6))``;
- NPO: batch-level, beta 0.2: ``-(2/beta) log sigmoid(beta (L_cur - L_ref))`` with L the forget
  rows' weighted NLL sum over their maskable count, plus alpha x retain;
- max length 1024 with right truncation (dllm's DataArguments).

The noise (diffusion time and masked positions per row) is drawn with the project's
``diffusion.noise_batch`` on both sides: the rules under test are what is computed from it.
Tolerances: both sides run float32 operations in a different order: rtol 1e-5 / atol 1e-6 on
losses and gradients (as tests/training/test_loss_composition.py). Each power check asks the
project's default (or the rule not taken) to be off by far more.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mdu_jax as mj
from mdu_jax import diffusion
from mdu_jax.data.batching import BatchPlan
from mdu_jax.data.encoding import Example, encode_rows
from mdu_jax.data.tokenizer import load_tokenizer
from mdu_jax.training import load_config
from mdu_jax.training import step as steps
from mdu_jax.training.loss import make_loss_fn
from mdu_jax.training.optimizer import make_optimizer
from mdu_jax.training.state import init_state
from tests.fixtures import write_hf_checkpoint
from tests.training.loss_helpers import assert_trees_close, tiny_config, tiny_params

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RTOL, ATOL = 1e-5, 1e-6
PAD, MASK = 1, 95


def preset(name: str, *overrides: str):
    return load_config(os.path.join(REPO, "configs", "paper", name), list(overrides))


def rows(seed: int, n: int = 8):
    """Examples of different lengths (5..14 tokens; prompts of 2..4), forget / retain alternating."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length, prompt = int(rng.integers(5, 15)), int(rng.integers(2, 5))
        out.append(Example(rng.integers(2, 94, length).astype(np.int32), prompt, is_forget=i % 2 == 0))
    return out


def plan_batch(cfg, examples, step: int = 0):
    d = cfg.data
    plan = BatchPlan([e for e in examples if e.is_forget], [e for e in examples if not e.is_forget],
                     batch_size=4, seed=cfg.seed, buckets=d.buckets, pad_id=PAD, mixing=d.mixing,
                     pad_labels=d.pad_labels, padding=d.padding, length_grouping=d.length_grouping,
                     group_batches=cfg.optim.grad_accum)
    idx, _ = plan.indices(step)
    return plan.batch(step).as_dict(), [plan.pool[i] for i in idx]


# ------------------------------------------------------------------ the reference, by hand


def reference_batch(examples):
    """The reference's collated batch: EOS right-padding to the longest row, labels -100 off the response."""
    T = max(len(e.input_ids) for e in examples)
    ids = np.full((len(examples), T), PAD, np.int32)
    labels = np.full((len(examples), T), -100, np.int64)
    for b, e in enumerate(examples):
        ids[b, :len(e.input_ids)] = e.input_ids
        labels[b, e.prompt_len:len(e.input_ids)] = e.input_ids[e.prompt_len:]
    return ids, labels, np.array([e.is_forget for e in examples])


def cart(masked):
    """Dream's CART weights by their definition: sum over unmasked j != i of 0.5 p (1-p)^(|i-j|-1)."""
    T = masked.shape[1]
    d = np.abs(np.arange(T)[:, None] - np.arange(T)[None, :])
    geo = np.where(d == 0, 0.0, 0.5 * 0.3 * 0.7 ** np.maximum(d - 1, 0))
    return jnp.asarray(((~np.asarray(masked)).astype(np.float64) @ geo) * np.asarray(masked), jnp.float32)


def weighted_nll_sum(logits, ids, masked, rows_sel, t, family):
    """Sum over the selected rows' masked positions of w x CE (LLaDA w = 1/(t + 1e-6), Dream CART)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ce = -jnp.take_along_axis(logp, ids[..., None], axis=-1)[..., 0]
    w = cart(masked) if family == "dream" else jnp.broadcast_to((1.0 / (t + 1e-6))[:, None], ce.shape)
    return jnp.sum(ce * w * (masked & rows_sel[:, None]))


def reference_noise(ids, labels, key):
    """(maskable, noised, masked, t) of a collated batch: the noise drawn eagerly (host values), so
    that the reference's counts are plain integers and its loss can be compiled as one program."""
    maskable = labels != -100
    noised, masked, t = diffusion.noise_batch(diffusion.row_keys(key, ids.shape[0]), jnp.asarray(ids),
                                              jnp.asarray(maskable), MASK)
    return maskable, noised, np.asarray(masked), t


def reference_mdu_loss(cfg, anchor, ids, labels, is_forget, key, *, tau, lam, extra_pad=0):
    """MDU as _random_sft_null_anchor_loss + _retain_sft_loss compute it (no attention mask anywhere),
    as a function of the params. ``extra_pad``: that many more pad columns after the noise is drawn
    (the same noise, longer padding)."""
    maskable, noised, masked, t = reference_noise(ids, labels, key)
    if extra_pad:
        widen = ((0, 0), (0, extra_pad))
        ids, maskable = np.pad(ids, widen, constant_values=PAD), np.pad(maskable, widen)
        noised, masked = jnp.pad(noised, widen, constant_values=PAD), np.pad(masked, widen)
    uncond_in = jnp.where(jnp.asarray(maskable), noised, MASK)          # q_mask = ~maskable: pads too
    sel = masked & is_forget[:, None]
    n_forget = max(1, int(sel.sum()))
    n_retain = max(1, int((maskable & ~is_forget[:, None]).sum()))

    def loss(params):
        cond = mj.forward(cfg, params, noised).astype(jnp.float32)
        anchor_logits = jax.lax.stop_gradient(mj.forward(cfg, anchor, uncond_in).astype(jnp.float32))
        logp_c = jax.nn.log_softmax(cond, axis=-1)
        logp_t = jax.lax.stop_gradient(jax.nn.log_softmax(tau * anchor_logits, axis=-1))
        kl = jnp.sum(jnp.exp(logp_c) * (logp_c - logp_t), axis=-1)
        forget = jnp.sum(kl * sel) / n_forget
        retain = weighted_nll_sum(cond, jnp.asarray(ids), masked, ~is_forget, t, cfg.family) / n_retain
        return forget + lam * retain

    return loss


def reference_npo_loss(cfg, anchor, ids, labels, is_forget, key, *, beta, lam):
    """_random_npo_loss: batch-level NPO on the forget rows (same noised input for both models) + alpha x
    retain, as a function of the params."""
    maskable, noised, masked, t = reference_noise(ids, labels, key)
    n_forget = max(1, int((maskable & is_forget[:, None]).sum()))
    n_retain = max(1, int((maskable & ~is_forget[:, None]).sum()))

    def loss(params):
        cond = mj.forward(cfg, params, noised)
        ref = jax.lax.stop_gradient(mj.forward(cfg, anchor, noised))
        L_cur = weighted_nll_sum(cond, jnp.asarray(ids), masked, is_forget, t, cfg.family) / n_forget
        L_ref = weighted_nll_sum(ref, jnp.asarray(ids), masked, is_forget, t, cfg.family) / n_forget
        npo = -(2.0 / beta) * jax.nn.log_sigmoid(beta * (L_cur - L_ref))
        retain = weighted_nll_sum(cond, jnp.asarray(ids), masked, ~is_forget, t, cfg.family) / n_retain
        return npo + lam * retain

    return loss


def project_loss(model_cfg, train_cfg, params, anchor, batch, key, *, grads=True):
    """(loss, gradient) of the project's train loss under `train_cfg`; (loss, None) without `grads`
    (the power checks need the value only: a forward program compiles in a fraction of the time)."""
    loss_fn = make_loss_fn(model_cfg, train_cfg.objective, attend_padding=train_cfg.data.attend_padding)
    batch = jax.tree.map(jnp.asarray, batch)
    loss = lambda p: loss_fn(p, anchor, batch, key, 0, None)  # noqa: E731
    if not grads:
        return jax.jit(loss)(params)[0], None
    (value, _), gradient = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return value, gradient


def value_and_grad(loss):
    """(loss, gradient) of a function of the params, compiled as one program (run op by op, the
    first padding case compiled 213 small programs, most of its time)."""
    return jax.jit(jax.value_and_grad(loss))


# ------------------------------------------------------------------ padding (item 1)


@pytest.mark.parametrize("family,name", [("llada", "tofu_llada8b_forget10_mdu.yaml"),
                                         ("dream", "tofu_dream7b_forget10_mdu.yaml")])
def test_preset_padding_is_the_references_loss_and_gradient(family, name):
    cfg = preset(name, "objective.tau=0.5")
    assert cfg.data.attend_padding and cfg.data.padding == "longest"
    model_cfg = tiny_config(family)
    params, anchor = tiny_params(model_cfg, 0), tiny_params(model_cfg, 1)
    batch, members = plan_batch(cfg, rows(3))
    ids, labels, is_forget = reference_batch(members)
    assert batch["input_ids"].shape == ids.shape           # padded to the longest row, not a bucket
    np.testing.assert_array_equal(batch["input_ids"], ids)
    key = jax.random.key(11)
    loss, grads = project_loss(model_cfg, cfg, params, anchor, batch, key)
    ref_loss, ref_grads = value_and_grad(reference_mdu_loss(model_cfg, anchor, ids, labels, is_forget, key,
                                                            tau=0.5, lam=cfg.objective.retain_weight))(params)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=RTOL)
    assert_trees_close(grads, ref_grads, RTOL, ATOL, "gradient")
    # Power: hidden pads (the project's default) or bucket-length visible pads change the numbers.
    hidden, _ = project_loss(model_cfg, preset(name, "objective.tau=0.5", "data.attend_padding=false"),
                             params, anchor, batch, key, grads=False)
    bucket_batch, _ = plan_batch(preset(name, "data.padding=bucket"), rows(3))
    assert bucket_batch["input_ids"].shape[1] == 128 > ids.shape[1]
    assert abs(float(hidden) - float(ref_loss)) > 100 * RTOL * abs(float(ref_loss))
    longer = jax.jit(reference_mdu_loss(model_cfg, anchor, ids, labels, is_forget, key, tau=0.5,
                                        lam=cfg.objective.retain_weight, extra_pad=128 - ids.shape[1]))(params)
    assert abs(float(longer) - float(ref_loss)) > 100 * RTOL * abs(float(ref_loss))


# ------------------------------------------------------------------ accumulation (item 4)


def global_norm(tree) -> float:
    """||g|| over every leaf (host arrays, float64 sums)."""
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64))) for g in jax.tree.leaves(tree))))


def torch_clip(tree, max_norm):
    """torch.nn.utils.clip_grad_norm_: g * min(1, max_norm / (||g|| + 1e-6)) (host arrays)."""
    norm = global_norm(tree)
    return jax.tree.map(lambda g: g * min(1.0, max_norm / (norm + 1e-6)), tree), norm


@pytest.mark.parametrize("family,name,rule", [("dream", "tofu_dream7b_forget10_mdu.yaml", "sum"),
                                              ("llada", "tofu_llada8b_forget10_mdu.yaml", "mean")])
def test_preset_accumulation_is_hf_trainers(family, name, rule):
    """Two micro-batches, one optimiser step through the real step and Optax chain; Adam's first
    moment after it is (1 - b1) x the clipped accumulated gradient of the reference's rule.

    Adam's first update is about lr x sign(g), blind to the gradient's scale, so the test reads
    the moment. clip_norm is set between the norms of the mean and of the sum of the two
    micro-batch gradients (the presets' 1.0 is checked as the value they hold): then only the
    sum is clipped, and taking the other rule moves the moment by a factor of about 2."""
    base = preset(name, "objective.tau=0.5", "optim.grad_accum=2")
    assert base.optim.accumulation == rule and base.optim.clip_norm == 1.0
    model_cfg = tiny_config(family)
    params, anchor = tiny_params(model_cfg, 0), tiny_params(model_cfg, 1)
    rng_seed = 5
    state_key = jax.random.wrap_key_data(jax.random.key_data(jax.random.key(rng_seed)))
    grads = []
    batches = []
    for s in range(2):
        batch, members = plan_batch(base, rows(7), step=s)
        ids, labels, is_forget = reference_batch(members)
        key = jax.random.fold_in(state_key, s)
        grads.append(value_and_grad(reference_mdu_loss(model_cfg, anchor, ids, labels, is_forget, key, tau=0.5,
                                                       lam=base.objective.retain_weight))(params)[1])
        grads[-1] = jax.device_get(grads[-1])   # the reference's arithmetic below runs on the host
        batches.append(batch)
    total = jax.tree.map(lambda a, b: a + b, *grads)
    accumulated = total if rule == "sum" else jax.tree.map(lambda g: g / 2, total)
    other = jax.tree.map(lambda g: g / 2, total) if rule == "sum" else total
    n_acc, n_other = global_norm(accumulated), global_norm(other)
    clip = float(np.sqrt(n_acc * n_other))            # between the two norms
    clipped, _ = torch_clip(accumulated, clip)
    other_clipped, _ = torch_clip(other, clip)

    cfg = preset(name, "objective.tau=0.5", "optim.grad_accum=2", f"optim.clip_norm={clip}",
                 "optim.warmup_ratio=0", "optim.schedule=constant")
    tx, _ = make_optimizer(cfg.optim, total_steps=1)
    loss_fn = make_loss_fn(model_cfg, cfg.objective, attend_padding=cfg.data.attend_padding)
    step = jax.jit(steps.make_step(loss_fn, tx))
    state = init_state(params, tx, rng_seed)
    for batch in batches:
        state, _ = step(state, anchor, jax.tree.map(jnp.asarray, batch))
    mu = jax.device_get(optax.tree_utils.tree_get(state["opt_state"], "mu"))
    b1 = cfg.optim.b1
    assert_trees_close(mu, jax.tree.map(lambda g: (1 - b1) * g, clipped), 1e-4, 1e-7, "Adam first moment")
    wrong = jax.tree.map(lambda g: (1 - b1) * g, other_clipped)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(mu), jax.tree.leaves(wrong)))
    scale = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(mu))
    assert diff > 0.2 * scale


# ------------------------------------------------------------------ NPO (item 3)


# LLaDA only: the NPO rule does not depend on the family (Dream's CART weights are checked in the
# padding test), and each case compiles two full gradient programs.
@pytest.mark.parametrize("family,name", [("llada", "tofu_llada8b_forget10_npo.yaml")])
def test_preset_npo_is_batch_level_with_beta_02(family, name):
    cfg = preset(name)
    assert cfg.objective.npo_beta == 0.2 and cfg.objective.npo_batch_level
    model_cfg = tiny_config(family)
    params, anchor = tiny_params(model_cfg, 0), tiny_params(model_cfg, 1)
    batch, members = plan_batch(cfg, rows(5))
    ids, labels, is_forget = reference_batch(members)
    key = jax.random.key(2)
    loss, grads = project_loss(model_cfg, cfg, params, anchor, batch, key)
    ref_loss, ref_grads = value_and_grad(reference_npo_loss(model_cfg, anchor, ids, labels, is_forget, key, beta=0.2,
                                                            lam=cfg.objective.retain_weight))(params)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=RTOL)
    assert_trees_close(grads, ref_grads, RTOL, ATOL, "gradient")
    per_sequence, _ = project_loss(model_cfg, preset(name, "objective.npo_batch_level=false"), params, anchor,
                                   batch, key, grads=False)
    assert abs(float(per_sequence) - float(ref_loss)) > 100 * RTOL * abs(float(ref_loss))


# ------------------------------------------------------------------ max length (item 7)


def test_preset_keeps_rows_up_to_1024_tokens_and_cuts_longer_ones_on_the_right(tmp_path):
    cfg = preset("tofu_llada8b_forget10_mdu.yaml")
    assert cfg.data.max_length == 1024 and cfg.data.truncation == "right"
    write_hf_checkpoint(tmp_path / "m", "llada")
    tok = load_tokenizer(str(tmp_path / "m"), mj.ModelConfig.from_hf(str(tmp_path / "m")))
    long_rows = [{"question": "who wrote the book ?", "answer": " ".join(["book"] * n)} for n in (700, 1100)]
    out = encode_rows(tok, long_rows, is_forget=True, max_length=cfg.data.max_length,
                      truncation=cfg.data.truncation)
    assert len(out[0].input_ids) > 700            # whole: the project's 512 would cut it
    assert len(out[1].input_ids) == 1024 and out[1].input_ids[-1] == out[1].input_ids[-2]   # cut at the right
    with pytest.raises(ValueError, match="exceed data.max_length=512"):
        encode_rows(tok, long_rows[:1], is_forget=True, max_length=512, truncation="error")
