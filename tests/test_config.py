"""Config: defaults, overrides, shorthand, and one clear error per bad key or value."""

from __future__ import annotations

import pytest

from lobell.config import Config, load_config
from lobell.errors import LobellError


def test_defaults_follow_the_documented_contract():
    cfg = load_config()
    assert (cfg.task, cfg.strategy.name, cfg.batch_size, cfg.epochs, cfg.seed) == ("text-classification", "full", 32, 3, 0)
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay) == ("adamw", 5e-5, 0.01)
    assert (cfg.scheduler.name, cfg.scheduler.warmup_ratio) == ("linear", 0.1)
    assert (cfg.early_stopping.patience, cfg.early_stopping.monitor) == (2, "accuracy")


def test_yaml_then_overrides_and_shorthand(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("strategy: gradual\noptimizer: {name: sgd, lr: 0.1}\nepochs: 5\n")
    cfg = load_config(path, ["strategy.unfreeze_every=2", "optimizer.lr=3e-5", "data.text_column=review"])
    assert (cfg.strategy.name, cfg.strategy.unfreeze_every) == ("gradual", 2)
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.epochs) == ("sgd", 3e-5, 5)
    assert cfg.data.text_column == "review"
    assert load_config(path, ["strategy=full"]).strategy.name == "full"


@pytest.mark.parametrize("override, fragment", [
    ("optimiser.lr=3", "unknown key 'optimiser' (did you mean 'optimizer'?)"),
    ("optimizer.learning_rate=3", "unknown key 'optimizer.learning_rate'"),
    ("data.text_colum=x", "did you mean 'text_column'?"),
    ("optimizer.lr=0", "optimizer.lr=0 is invalid"),
    ("batch_size=0", "batch_size=0 is invalid"),
    ("epochs=0", "epochs=0 is invalid"),
    ("strategy=magic", "strategy.name='magic' is invalid"),
    ("epochs=many", "epochs='many' is invalid"),
    ("nonsense", "is not KEY=VALUE"),
])
def test_bad_keys_and_values_name_the_fault(override, fragment):
    with pytest.raises(LobellError) as info:
        load_config(None, [override])
    assert fragment in str(info.value)


def test_contradicting_strategy_parameters_are_refused():
    with pytest.raises(LobellError, match="frozen_epochs=3 leaves no epoch"):
        load_config(None, ["strategy=two-stage", "strategy.frozen_epochs=3", "epochs=3"])


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(LobellError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(LobellError, match="not valid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(LobellError, match="must hold a mapping"):
        load_config(listing)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["strategy=gradual", "optimizer.lr=1e-4"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
    assert isinstance(cfg, Config)


@pytest.mark.parametrize("override", ["batch_size=true", "epochs=true", "optimizer.lr=false", "head.dropout=true"])
def test_true_or_false_is_not_a_number(override):
    with pytest.raises(LobellError, match="not true/false"):
        load_config(None, [override])


def test_true_or_false_still_set_switches():
    cfg = load_config(None, ["data.group_by_length=false", "recipe=false", "strategy.train_bn=true"])
    assert (cfg.data.group_by_length, cfg.recipe, cfg.strategy.train_bn) == (False, False, True)
