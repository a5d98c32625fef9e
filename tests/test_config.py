import os

import pytest
import yaml

from training.config import ConfigError, dump_yaml, load_config


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_file_and_overrides_merge_in_order(tmp_path):
    path = write(tmp_path, "model:\n  width: 0.5\ntrain:\n  epochs: 30\n")
    cfg = load_config(path, ["train.epochs=40", "optim.step_milestones=[1, 2]"])
    assert cfg.model.width == 0.5
    assert cfg.train.epochs == 40.0 and isinstance(cfg.train.epochs, float)  # int -> float
    assert cfg.optim.step_milestones == [1.0, 2.0]
    assert cfg.model.depth == 50                                          # default kept


def test_unknown_key_in_file_names_it_and_suggests(tmp_path):
    path = write(tmp_path, "optim:\n  base_lrr: 0.2\n")
    with pytest.raises(ConfigError, match=r"'optim.base_lrr'.*did you mean 'base_lr'"):
        load_config(path)


def test_unknown_section_and_override_key():
    with pytest.raises(ConfigError, match="unknown config key 'modle.width'.*did you mean 'model'"):
        load_config(None, ["modle.width=1"])
    with pytest.raises(ConfigError, match="'train.epoch'.*did you mean 'epochs'"):
        load_config(None, ["train.epoch=3"])


@pytest.mark.parametrize("override,message", [
    ("train.global_batch=2.5", "train.global_batch must be int"),
    ("model.small_stem=3", "model.small_stem must be bool"),
    ("train.seed=true", "train.seed must be int"),
    ("optim.step_milestones=5", "must be a list"),
    ("model=3", "model is a section"),
    ("optim.decay=linear", "optim.decay='linear' is not one of cosine, poly, step"),
    ("train.global_batch=0", "train.global_batch=0 must be positive"),
    ("optim.label_smoothing=1.5", r"optim.label_smoothing=1.5 must lie in \[0, 1\)"),
    ("optim.warmup_epochs=100", "must be less than train.epochs"),
    ("width", "expected section.key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_exponent_without_a_dot_is_a_float(tmp_path):
    # YAML 1.1 (PyYAML) reads "1e-4" as a string; for a float key it is meant as a number
    cfg = load_config(write(tmp_path, "optim:\n  weight_decay: 1e-4\n"), ["optim.base_lr=2e-1"])
    assert cfg.optim.weight_decay == 1e-4 and cfg.optim.base_lr == 0.2
    with pytest.raises(ConfigError, match="optim.base_lr must be float"):
        load_config(None, ["optim.base_lr=fast"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "model: [unclosed\n"))


def test_resolved_dump_loads_back_to_the_same_config(tmp_path):
    cfg = load_config(None, ["model.width=0.25", "data.dir=/x"])
    path = write(tmp_path, dump_yaml(cfg))
    assert load_config(path) == cfg
    assert yaml.safe_load(dump_yaml(cfg))["model"]["width"] == 0.25


@pytest.mark.parametrize("name", ["cpu_demo", "cpu_demo_constant", "resnet50_imagenet",
                                  "paper_224s", "paper_122s", "goyal_8k", "mlperf_lars_67k",
                                  "paper_224s_lars"])
def test_shipped_configs_load(name):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    load_config(os.path.join(repo, "configs", f"{name}.yaml"))
