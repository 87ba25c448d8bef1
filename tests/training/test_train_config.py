"""Run configs: YAML + dotted overrides, typed, with errors that name the key."""

import pathlib

import pytest

from mdu_jax.training.config import TrainConfig, load_config
from mdu_jax.typed_config import ConfigKeyError

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


TRAIN_CONFIGS = [p for p in sorted(CONFIGS.rglob("*.yaml")) if not p.name.startswith("demo")]


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_loads(path):
    cfg = load_config(str(path))
    assert isinstance(cfg, TrainConfig)


def test_paper_recipe_values():
    llada = load_config(str(CONFIGS / "tofu_llada8b.yaml"))
    assert (llada.objective.method, llada.objective.tau, llada.objective.retain_weight) == ("mdu", 1.0, 1.0)
    assert (llada.optim.lr, llada.epochs, llada.batch_size, llada.optim.grad_accum) == (1e-5, 9, 4, 4)
    dream = load_config(str(CONFIGS / "tofu_dream7b.yaml"))
    assert dream.epochs == 5 and dream.objective.retain_loss_weight == "cart" and dream.optim.lr == 1e-5
    rwku = load_config(str(CONFIGS / "rwku_dream7b.yaml"))
    assert rwku.epochs == 3 and rwku.objective.retain_weight == 0.0 and rwku.data.benchmark == "rwku"


def test_dotted_overrides_are_typed():
    cfg = load_config(str(CONFIGS / "tofu_llada8b.yaml"), ["objective.tau=0.25", "optim.lr=8e-6",
                                                          "parallel.mesh.fsdp=4", "data.buckets=[64,128,512]"])
    assert cfg.objective.tau == 0.25 and cfg.optim.lr == 8e-6
    assert cfg.parallel.mesh["fsdp"] == 4 and cfg.data.buckets == [64, 128, 512]


def test_unknown_key_is_named():
    with pytest.raises(ConfigKeyError, match=r"unknown config key 'objective.temperature'"):
        load_config(str(CONFIGS / "tofu_llada8b.yaml"), ["objective.temperature=2"])


def test_unknown_key_in_yaml_is_named(tmp_path):
    (tmp_path / "c.yaml").write_text("model: {path: x}\noptim: {learning_rate: 1.0e-5}\n")
    with pytest.raises(ConfigKeyError, match=r"unknown config key 'optim.learning_rate'"):
        load_config(str(tmp_path / "c.yaml"))


def test_wrong_type_is_named():
    with pytest.raises(ConfigKeyError, match=r"optim.grad_accum: expected an integer, got 'four'"):
        load_config(str(CONFIGS / "tofu_llada8b.yaml"), ["optim.grad_accum=four"])
    with pytest.raises(ConfigKeyError, match=r"objective.divergence: expected one of \['forward', 'reverse', 'js'\]"):
        load_config(str(CONFIGS / "tofu_llada8b.yaml"), ["objective.divergence=kl"])


def test_invalid_values_are_named():
    with pytest.raises(ConfigKeyError, match=r"objective.method: unknown 'rmu'"):
        load_config(str(CONFIGS / "tofu_llada8b.yaml"), ["objective.method=rmu"])
    with pytest.raises(ConfigKeyError, match=r"objective.tau: expected >= 0"):
        load_config(str(CONFIGS / "tofu_llada8b.yaml"), ["objective.tau=-1"])
    with pytest.raises(ConfigKeyError, match=r"model: set exactly one of model.path"):
        load_config(base={})


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigKeyError, match=r"no such config file"):
        load_config(str(tmp_path / "nope.yaml"))


def test_a_partial_section_keeps_the_fields_own_defaults():
    """Keys given for a section fill in over the field's default_factory, not the section class's."""
    import dataclasses

    from mdu_jax import typed_config

    @dataclasses.dataclass
    class Stage:
        steps: int = 10
        lr: float = 1e-3

    @dataclasses.dataclass
    class Run:
        sft: Stage = dataclasses.field(default_factory=Stage)
        mdu: Stage = dataclasses.field(default_factory=lambda: Stage(steps=150, lr=5e-4))

    run = typed_config.from_dict(Run, {"mdu": {"lr": 1e-4}})
    assert run.mdu == Stage(steps=150, lr=1e-4) and run.sft == Stage()
    assert typed_config.from_dict(Run, {}).mdu == Stage(steps=150, lr=5e-4)
    with pytest.raises(ConfigKeyError, match="mdu.epochs"):
        typed_config.from_dict(Run, {"mdu": {"epochs": 3}})
