"""Sweeps: one training config per value of a config key (``--sweep objective.tau=0,0.5,1``).

``python -m mdu_jax.train --config X.yaml --sweep objective.tau=0,0.5,1`` trains each;
``python -m mdu_jax.sweep_eval`` also evaluates and plots (``mdu_jax.experiments.tau_sweep``).
"""

from __future__ import annotations

import os
from typing import Iterator

from mdu_jax import typed_config
from mdu_jax.training.config import TrainConfig
from mdu_jax.typed_config import ConfigKeyError


def parse_sweep(text: str) -> tuple[str, list]:
    """'objective.tau=0,0.5,1' -> ('objective.tau', [0, 0.5, 1]) (values parsed as YAML)."""
    if "=" not in text:
        raise ConfigKeyError(f"--sweep {text!r}: expected KEY=V1,V2,...")
    key, raw = text.split("=", 1)
    values = [typed_config.parse_override(f"x={v}")[1] for v in raw.split(",") if v.strip()]
    if not values:
        raise ConfigKeyError(f"--sweep {text!r}: no values")
    return key.strip(), values


def sweep_values(cfg: TrainConfig, text: str) -> Iterator[tuple[object, TrainConfig]]:
    """(value, config) per sweep value; each run writes to ``<output_dir>/<key>=<value>``."""
    key, values = parse_sweep(text)
    base = typed_config.to_dict(cfg)
    for value in values:
        output_dir = os.path.join(cfg.output_dir, f"{key.split('.')[-1]}={value}")
        data = typed_config.apply_overrides(base, [f"{key}={value}", f"output_dir={output_dir}"], TrainConfig)
        yield value, typed_config.from_dict(TrainConfig, data)
