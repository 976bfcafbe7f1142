"""Freeze plans after real optimiser steps: what is frozen stays bit-for-bit, LRs keep their ratios."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from torch import nn

from lobell.config import StrategyConfig, load_config
from lobell.console import Reporter
from lobell.errors import LobellError
from lobell.strategies.layer_map import build_layer_map
from lobell.strategies.plans import apply_stage, build_plan, param_groups
from lobell.training.loop import train_epoch
from lobell.training.optim import build_optimizer, build_scheduler
from lobell.training.runner import train


def _checkpoint(tiny_bert) -> dict[str, torch.Tensor]:
    return {f"bert.{k}": v for k, v in load_file(tiny_bert / "model.safetensors").items()}


def _saved(run) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


def test_feature_extraction_changes_only_the_head(text_overrides, tiny_bert):
    run = train(load_config(None, text_overrides + ["strategy=feature-extraction", "epochs=2"]), quiet=True).run_dir
    before, after = _checkpoint(tiny_bert), _saved(run)
    backbone = [k for k in after if k.startswith("bert.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)
    stages = json.loads((run / "stages.json").read_text())
    assert stages[0]["trainable_groups"] == ["head"] and stages[0]["trainable_params"] == 2 * 32 + 2


def test_gradual_unfreezes_one_group_per_epoch_from_the_top(text_overrides, tiny_bert):
    result = train(load_config(None, text_overrides + ["strategy=gradual", "epochs=3", "early_stopping.monitor=loss",
                                                       "early_stopping.patience=null"]), quiet=True)
    run = result.run_dir
    assert result.metrics["best_epoch"] == 3, "the saved weights must be the last epoch's for this check"
    stages = json.loads((run / "stages.json").read_text())
    assert [s["trainable_groups"] for s in stages] == [
        ["head"], ["bert.pooler", "head"], ["bert.encoder.layer.1", "bert.pooler", "head"]]
    assert [(s["first_epoch"], s["last_epoch"]) for s in stages] == [(1, 1), (2, 2), (3, 3)]
    before, after = _checkpoint(tiny_bert), _saved(run)
    embeddings = [k for k in after if k.startswith("bert.embeddings.")]
    assert all(torch.equal(before[k], after[k]) for k in embeddings), "never-unfrozen group changed"
    for block, changed in [(0, False), (1, True)]:
        key = f"bert.encoder.layer.{block}.attention.self.query.weight"
        assert torch.equal(before[key], after[key]) is not changed
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][1:]
    assert [sorted(e["lrs"]) for e in epochs] == [sorted(s["trainable_groups"]) for s in stages]


def test_discriminative_lrs_keep_their_ratios_at_every_step(text_overrides):
    run = train(load_config(None, text_overrides + ["strategy=discriminative", "strategy.lr_decay=0.5",
                                                    "scheduler=linear", "scheduler.warmup_ratio=0.2",
                                                    "epochs=1"]), quiet=True).run_dir
    steps = json.loads((run / "lrs.json").read_text())
    names = [k for k in steps[0] if k != "step"]
    assert names[-1] == "head" and len(names) == 5
    checked = 0
    for record in steps:
        head = record["head"]
        for distance, name in enumerate(reversed(names)):
            assert record[name] == pytest.approx(head * 0.5 ** distance, rel=1e-9)
        checked += 1
    assert checked > 10 and len({round(r["head"], 12) for r in steps}) > 5, "the schedule must really move"


def test_full_trains_backbone_at_a_lower_lr(text_overrides):
    run = train(load_config(None, text_overrides + ["strategy.backbone_lr_scale=0.25", "epochs=1",
                                                    "scheduler=constant"]), quiet=True).run_dir
    record = json.loads((run / "lrs.json").read_text())[-1]
    assert record["head"] == pytest.approx(3e-3)
    assert record["bert.embeddings"] == pytest.approx(3e-3 * 0.25)


def test_two_stage_is_head_only_then_everything_at_a_lower_lr(text_overrides):
    run = train(load_config(None, text_overrides + ["strategy=two-stage", "strategy.unfrozen_lr_factor=0.5",
                                                    "epochs=2", "scheduler=constant",
                                                    "early_stopping.patience=null"]), quiet=True).run_dir
    stages = json.loads((run / "stages.json").read_text())
    assert stages[0]["trainable_groups"] == ["head"] and len(stages[1]["trainable_groups"]) == 5
    assert stages[1]["lrs"]["head"] == pytest.approx(0.5 * stages[0]["lrs"]["head"])


class _Toy:
    """A minimal adapter: two BN blocks and a head, for checking the loop's freezing directly."""

    modality = "toy"

    def __init__(self):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8),
                                   nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
        self.layer_map = build_layer_map(self.model, ["6"], "toy")

    def forward(self, model, batch):
        return model(batch["x"])


@pytest.mark.parametrize("train_bn", [False, True])
def test_frozen_batch_norm_keeps_running_statistics(train_bn):
    toy = _Toy()
    stage = build_plan(StrategyConfig(name="feature-extraction"), toy.layer_map, 1)[0]
    apply_stage(toy.model, toy.layer_map, stage)
    optimizer = build_optimizer(load_config().optimizer, param_groups(toy.model, toy.layer_map, stage, 0.1, 0.0))
    scheduler = build_scheduler(load_config(None, ["scheduler=constant", "scheduler.warmup_ratio=0"]).scheduler,
                                optimizer, 10)
    before = {k: v.clone() for k, v in toy.model.state_dict().items()}
    batches = [{"x": torch.randn(16, 4) * 3 + 1, "targets": torch.randint(0, 2, (16,))} for _ in range(5)]
    train_epoch(Accelerator(cpu=True), toy, toy.model, batches, optimizer, scheduler, nn.functional.cross_entropy,
                max_grad_norm=1.0, train_bn=train_bn, reporter=Reporter(quiet=True), description="t")
    after = toy.model.state_dict()
    frozen = [k for k in before if not k.startswith("6.")]
    stats = [k for k in frozen if "running_" in k]
    assert all(torch.equal(before[k], after[k]) for k in frozen if "running_" not in k and "num_batches" not in k)
    assert all(torch.equal(before[k], after[k]) for k in stats) is (not train_bn)
    assert not torch.equal(before["6.weight"], after["6.weight"])


def test_plans_that_name_missing_groups_are_errors(tiny_bert):
    from lobell.models.text import TextAdapter

    adapter = TextAdapter.from_pretrained(str(tiny_bert), 2, "classification", ["a", "b"])
    with pytest.raises(LobellError, match="max_groups=9 but the model has only 5 layer groups"):
        build_plan(StrategyConfig(name="gradual", max_groups=9), adapter.layer_map, 3)
    plan = build_plan(StrategyConfig(name="gradual", max_groups=2, unfreeze_every=2), adapter.layer_map, 5)
    assert [(s.epochs, len(s.trainable)) for s in plan] == [(2, 1), (3, 2)]
