"""The README's train command-line options ``--sweep KEY=V1,V2`` and ``--export-hf DIR``, run
through ``python -m mdu_jax.train``'s main on a tiny model (one optimiser step each)."""

import numpy as np
import yaml

import mdu_jax as mj
from mdu_jax.checkpoints.safetensors_io import CheckpointReader
from mdu_jax.train import main
from mdu_jax.training.metrics_log import read_metrics
from tests.training.folder_helpers import ONE_DEVICE
from tests.training.helpers import setup_run


def write_config(tmp_path, **changes):
    """The tiny run's config on one device (what these options do does not depend on the layout,
    and one device compiles each run's step faster than eight), written as run.yaml."""
    base = setup_run(tmp_path)
    base.update(max_steps=1, parallel=dict(ONE_DEVICE), **changes)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(base))
    return path, base


def test_sweep_trains_once_per_value_in_its_own_folder(tmp_path):
    path, base = write_config(tmp_path)
    assert main(["--config", str(path), "--sweep", "objective.tau=0,1", "--no-progress"]) == 0
    finals = {}
    for tau in (0, 1):
        run_dir = tmp_path / "run" / f"tau={tau}"
        written = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert written["objective"]["tau"] == tau and written["output_dir"] == str(run_dir)
        assert len(read_metrics(str(run_dir / "metrics.jsonl"))) == 1
        finals[tau] = CheckpointReader(run_dir / "final")
    # tau changes MDU's target, so the two runs end in different places.
    names = finals[0].names()
    assert max(np.abs(finals[0].get(n) - finals[1].get(n)).max() for n in names) > 0


def test_export_hf_writes_the_final_params_as_a_loadable_hf_folder(tmp_path):
    # tau 1 as in the sweep's second run above: the same train step program, so that XLA's
    # compilation of it comes from the session's persistent cache (what --export-hf does does
    # not depend on tau).
    path, base = write_config(tmp_path, objective={"method": "mdu", "tau": 1.0})
    export = tmp_path / "exported"
    assert main(["--config", str(path), "--export-hf", str(export), "--no-progress"]) == 0
    final = CheckpointReader(tmp_path / "run" / "final")
    exported = CheckpointReader(export)
    assert sorted(exported.names()) == sorted(final.names())
    for name in final.names():
        np.testing.assert_array_equal(exported.get(name), final.get(name), err_msg=name)
    # The exported folder is a model folder of its own: config, weights and tokenizer load back.
    cfg, params, tokenizer = mj.load_pretrained(export)
    assert cfg.family == "llada" and tokenizer is not None
    initial = CheckpointReader(base["model"]["path"])
    assert any(np.abs(exported.get(n) - initial.get(n)).max() > 0 for n in initial.names())  # trained
