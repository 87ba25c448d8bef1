"""The embedded offline demo's building blocks: a generated TOFU-style world, a tokenizer
fitted on it and a tiny LLaDA/Dream starting model, all written by the project itself.

    from mdu_jax import demo
    assets = demo.prepare_demo(demo.DemoConfig(), "runs/demo")   # data/, tokenizer/, model_init/
    rows = demo.demo_pairs(assets.world, "sft")                   # [{question, answer}]
"""

from mdu_jax.demo.assets import DemoAssets, DemoConfig, prepare_demo
from mdu_jax.demo.model import demo_model_config, save_hf_folder, write_demo_model
from mdu_jax.demo.tokenizer import TokenizerInfo, build_tokenizer, chat_token_lengths
from mdu_jax.demo.world import (FACT_KINDS, SPLITS, Fact, Person, World, build_world, demo_pairs, demo_texts,
                                tofu_files, write_tofu_layout)

__all__ = ["DemoAssets", "DemoConfig", "prepare_demo", "demo_model_config", "save_hf_folder",
           "write_demo_model", "TokenizerInfo", "build_tokenizer", "chat_token_lengths", "FACT_KINDS",
           "SPLITS", "Fact", "Person", "World", "build_world", "demo_pairs", "demo_texts", "tofu_files",
           "write_tofu_layout"]
