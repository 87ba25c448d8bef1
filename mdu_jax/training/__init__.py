"""Training: config -> data plan -> loss per method -> optimiser -> jit / pmap step -> checkpoints.

    from mdu_jax.training import load_config, run
    result = run(load_config("configs/tofu_llada8b.yaml", ["objective.tau=0.5"]))
    print(result.summary)

One idea per module: ``config`` (typed sections, YAML, overrides), ``data_plan`` (rows -> batches),
``loss`` (every method's loss, the only place that knows models and objectives together),
``optimizer`` (the Optax chain), ``state`` (train state and its shardings), ``step`` (the jit and
pmap steps), ``checkpointing`` (orbax run checkpoints), ``legacy_checkpoints`` (folders of earlier
versions), ``run_folder`` (an output folder belongs to one run), ``metrics_log`` (JSONL /
TensorBoard), ``run_summary`` (the end-of-run report), ``loop`` (the run), ``sweep`` (one config
per value of a key), ``memory`` (compiled memory plans).
"""

from mdu_jax.training.config import TrainConfig, load_config, to_yaml
from mdu_jax.training.checkpointing import CheckpointDamagedError
from mdu_jax.training.legacy_checkpoints import LegacyCheckpointError
from mdu_jax.training.loop import DivergenceError, NonFiniteLossError, RunResult, UpdateRejectedError, run
from mdu_jax.training.run_folder import RESULT_NEUTRAL, RunFolderError
from mdu_jax.training.sweep import parse_sweep, sweep_values

__all__ = ["TrainConfig", "load_config", "to_yaml", "run", "RunResult", "UpdateRejectedError", "NonFiniteLossError",
           "DivergenceError", "RunFolderError", "CheckpointDamagedError", "LegacyCheckpointError", "RESULT_NEUTRAL",
           "parse_sweep", "sweep_values"]
