"""Training: config -> data plan -> loss per method -> optimiser -> jit / pmap step -> checkpoints.

    from mdu_jax.training import load_config, run
    result = run(load_config("configs/tofu_llada8b.yaml", ["objective.tau=0.5"]))

One idea per module: ``config`` (typed sections, YAML, overrides), ``data_plan`` (rows -> batches),
``loss`` (every method's loss, the only place that knows models and objectives together),
``optimizer`` (the Optax chain), ``state`` (train state and its shardings), ``step`` (the jit and
pmap steps), ``checkpointing`` (orbax run checkpoints), ``metrics_log`` (JSONL / TensorBoard),
``loop`` (the run), ``sweep`` (one config per value of a key), ``memory`` (compiled memory plans).
"""

from mdu_jax.training.config import TrainConfig, load_config, to_yaml
from mdu_jax.training.loop import NonFiniteLossError, RunResult, run
from mdu_jax.training.sweep import parse_sweep, sweep_values

__all__ = ["TrainConfig", "load_config", "to_yaml", "run", "RunResult", "NonFiniteLossError", "parse_sweep",
           "sweep_values"]
