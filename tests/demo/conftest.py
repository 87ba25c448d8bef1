"""The tiny demo runs' shared start: one SFT model, twin and their evaluations per session."""

import shutil

import pytest

from mdu_jax.demo import pipeline
from tests.conftest import build_once

# The tiny runs: the CI world (2 forget authors of 5 questions), 20 SFT steps, 2 unlearning steps,
# a cheap evaluation of every question (the sequential report needs each group's rows). Plumbing,
# not conclusions: 20 SFT steps teach nothing.
TINY = ("demo: {size: ci}\nsft: {steps: 20}\nunlearn: {steps: 2}\n"
        "eval: {mc_samples: 2, gen_length: 6, steps: 6, anchor_ratios: [1.0]}\n")


def _prepare_tiny(folder):
    folder.mkdir(parents=True)
    config = folder / "tiny.yaml"
    config.write_text(TINY)
    pipeline.prepare(pipeline.load_demo_config(str(config), [f"output_dir={folder}"]), progress=False)


@pytest.fixture(scope="session")
def tiny_cache():
    """Copies the tiny runs' cache (SFT model, twin, their evaluations and probe: whatever
    ``pipeline.prepare`` of a run with TINY's demo, sft and eval sections writes) into an output
    folder, so that the run there starts at unlearning. Built once per session, by the first test
    process that asks (tests/conftest.build_once); the test files that use it train the same
    SFT model otherwise."""
    shared = build_once("tiny-demo", _prepare_tiny) / "cache"

    def into(output_dir):
        shutil.copytree(shared, output_dir / "cache", dirs_exist_ok=True)
        return output_dir

    return into
