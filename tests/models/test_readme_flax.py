"""The README's "From Flax" example runs as written: one MDU step on the NNX model with nnx.Optimizer."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tests.training.loss_helpers import tiny_batch, tiny_config

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- executed by tests/models/test_readme_flax.py -->"


def readme_example() -> str:
    text = README.read_text()
    assert MARKER in text, "the README lost its From Flax example"
    match = re.search(re.escape(MARKER) + r"\n```python\n(.*?)\n```", text, re.S)
    assert match, "the From Flax example must follow its marker as a ```python block"
    return match.group(1)


def test_from_flax_example_takes_one_mdu_step():
    batch = tiny_batch()
    scope = {"cfg": tiny_config("llada"), "ids": jnp.asarray(batch["input_ids"]),
             "response_mask": jnp.asarray(batch["maskable"])}
    exec(compile(readme_example(), str(README), "exec"), scope)
    loss = float(scope["loss"])
    assert np.isfinite(loss) and loss > 0  # tau = 0.5 tempers the anchor: the KL to it is positive
    model, optimizer = nnx.merge(scope["graphdef"], scope["state"])
    assert int(optimizer.step[...]) == 1
    trained = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    moved = [not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(scope["anchor"]))]
    assert all(moved)  # AdamW moves every parameter that has a gradient (all of them here)
