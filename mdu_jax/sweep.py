"""Sweeps: one training run per value of a config key (the tau trade-off is one command).

``python -m mdu_jax.sweep --config X.yaml --taus 0,0.5,1`` trains, evaluates and plots (``sweep_eval``);
``python -m mdu_jax.train --config X.yaml --sweep objective.tau=0,0.5,1`` only trains.
"""

from __future__ import annotations

import os
from typing import Iterator

from mdu_jax import structured
from mdu_jax.config import TrainConfig
from mdu_jax.structured import ConfigKeyError


def parse_sweep(text: str) -> tuple[str, list]:
    """'objective.tau=0,0.5,1' -> ('objective.tau', [0, 0.5, 1]) (values parsed as YAML)."""
    if "=" not in text:
        raise ConfigKeyError(f"--sweep {text!r}: expected KEY=V1,V2,...")
    key, raw = text.split("=", 1)
    values = [structured.parse_override(f"x={v}")[1] for v in raw.split(",") if v.strip()]
    if not values:
        raise ConfigKeyError(f"--sweep {text!r}: no values")
    return key.strip(), values


def sweep_values(cfg: TrainConfig, text: str) -> Iterator[tuple[object, TrainConfig]]:
    """(value, config) per sweep value; each run writes to ``<output_dir>/<key>=<value>``."""
    key, values = parse_sweep(text)
    base = structured.to_dict(cfg)
    for value in values:
        data = structured.apply_overrides(base, [f"{key}={value}", f"output_dir={os.path.join(cfg.output_dir, f'{key.split(chr(46))[-1]}={value}')}"],
                                          TrainConfig)
        yield value, structured.from_dict(TrainConfig, data)



if __name__ == "__main__":
    # ``python -m mdu_jax.sweep``: train, evaluate and plot per tau (see mdu_jax/sweep_eval.py).
    import sys

    from mdu_jax.sweep_eval import main

    sys.exit(main())
