"""Evaluation pipelines: TOFU (open-unlearning and MDU profiles), RWKU, result files, tables, sweeps.

    from mdu_jax.eval.tofu import evaluate_tofu
    result = evaluate_tofu(cfg, params, tokenizer, data_dir="../shared/data/tofu", forget_split="forget10")
    mdu_jax.eval.results.write_result(result, "eval.json"); mdu_jax.eval.report.print_table(result)
"""

import importlib

_SUBMODULES = ("tofu", "rwku", "results", "report", "scoring", "sweep", "answer_checks", "anchor_probe")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"mdu_jax.eval.{name}")
    raise AttributeError(f"module 'mdu_jax.eval' has no attribute {name!r}")


__all__ = list(_SUBMODULES)
