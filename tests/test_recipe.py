"""The recipe decides and explains; optimizers, schedules, losses, LR finder, batch finder, precision."""

from __future__ import annotations

import json

import pytest
import torch

from lobell.config import load_config
from lobell.errors import LobellError
from lobell.recipe import Profile, apply, decide
from lobell.training.batch_finder import find_batch_size
from lobell.training.runner import train


def _values(choices) -> dict:
    return {k: v for c in choices for k, v in c.values.items()}


def test_recipe_differs_by_data_and_model_and_says_why():
    cfg = load_config()
    small_text = _values(decide(cfg, Profile("text", "classification", "encoder", 22_000_000, 250, 2, 1.2, 30)))
    large_text = _values(decide(cfg, Profile("text", "classification", "encoder", 110_000_000, 50_000, 2, 1.1, 60)))
    small_image = _values(decide(cfg, Profile("image", "classification", "cnn", 3_500_000, 800, 10, 1.0)))
    imbalanced = decide(cfg, Profile("text", "classification", "encoder", 22_000_000, 5000, 3, 9.0, 30))
    assert small_text["strategy.name"] == "feature-extraction" and large_text["strategy.name"] == "full"
    assert (small_text["batch_size"], large_text["batch_size"], small_image["batch_size"]) == (16, 32, 64)
    # Head-only text training runs on cached features, where extra epochs cost little.
    assert (small_text["epochs"], large_text["epochs"], small_image["epochs"]) == (15, 2, 10)
    assert large_text["optimizer.lr"] == pytest.approx(3e-5 / 0.4) and small_image["optimizer.name"] == "sgd"
    assert _values(imbalanced)["loss.class_weights"] == "auto"
    assert "9.0x" in next(c.reason for c in imbalanced if c.name == "Loss")
    assert all(c.reason and c.source == "lobell" for c in imbalanced)


def test_the_strategy_that_will_run_decides_epochs_and_lr():
    small = Profile("text", "classification", "encoder", 22_000_000, 250, 2, 1.2, 30)
    uncached = _values(decide(load_config(None, ["speed.cache_features=false"]), small))
    assert uncached["strategy.name"] == "feature-extraction" and uncached["epochs"] == 4
    full = _values(decide(load_config(None, ["strategy=full"]), small))
    assert full["epochs"] == 4 and full["optimizer.lr"] == pytest.approx(1e-4 / 0.4)  # not the head-only 1e-3


def test_user_values_always_win():
    cfg = load_config(None, ["optimizer.lr=3e-5", "strategy=gradual", "batch_size=8"])
    choices = decide(cfg, Profile("text", "classification", "encoder", 22_000_000, 250, 2, 1.0, 30))
    resolved = apply(cfg, choices)
    assert (resolved.optimizer.lr, resolved.strategy.name, resolved.batch_size) == (3e-5, "gradual", 8)
    layers = next(c for c in choices if c.name == "Layers")
    assert layers.source == "yours" and "you set strategy.name=gradual" in layers.reason
    assert resolved.epochs == 4, "keys the user left unset still come from the recipe"


def test_recipe_json_and_resolved_config_are_written(text_overrides, tmp_path):
    overrides = [o for o in text_overrides if not o.startswith(("strategy", "epochs"))] + ["epochs=1"]
    run = train(load_config(None, overrides), quiet=True).run_dir
    recipe = json.loads((run / "recipe.json").read_text())
    assert recipe["profile"]["n_train"] == 400
    layers = next(c for c in recipe["choices"] if c["name"] == "Layers")
    # 400 examples would unfreeze gradually, but epochs=1 leaves no pass for the later stages.
    assert layers["values"] == {"strategy.name": "full"} and layers["source"] == "lobell"
    assert "epochs=1" in layers["reason"]
    assert "strategy:\n  name: full" in (run / "config.yaml").read_text()
    assert recipe["profile"]["probe"] is None, "text LRs do not depend on the probe: it is not run"



def test_batch_finder_respects_a_memory_cap_and_keeps_the_effective_batch():
    tried = []

    def fits(size: int) -> None:
        tried.append(size)
        if size > 12:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    size, accum = find_batch_size(fits, 32)
    assert size <= 12 and size * accum >= 32 and tried[:3] == [32, 16, 8]
    with pytest.raises(ValueError):
        find_batch_size(lambda size: (_ for _ in ()).throw(ValueError("a bug, not memory")), 8)


def test_batch_size_auto_and_gradient_accumulation(text_overrides, tmp_path):
    run = train(load_config(None, text_overrides + ["batch_size=auto", "epochs=1"]), quiet=True).run_dir
    resolved = (run / "config.yaml").read_text()
    assert "batch_size: 16\n" in resolved and "grad_accum: 1\n" in resolved  # fits on the CPU: recipe's 16
    run = train(load_config(None, [o.replace("output_dir=", "output_dir=") for o in text_overrides[:-1]]
                             + [f"output_dir={tmp_path / 'accum'}", "batch_size=8", "grad_accum=2", "epochs=1"]),
                quiet=True).run_dir
    assert len(json.loads((run / "lrs.json").read_text())) == 25  # 400 examples / (8 x 2)


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam),
                                       ("sgd", torch.optim.SGD), ("rmsprop", torch.optim.RMSprop)])
def test_each_optimizer_gets_its_groups_and_settings(name, cls):
    from lobell.training.optim import build_optimizer

    cfg = load_config(None, [f"optimizer.name={name}", "optimizer.nesterov=true", "optimizer.momentum=0.8"]).optimizer
    weight, bias = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    optimizer = build_optimizer(cfg, [{"params": [weight], "lr": 1e-3, "weight_decay": 0.01, "lr_scale": 1.0},
                                      {"params": [bias], "lr": 5e-4, "weight_decay": 0.0, "lr_scale": 0.5}])
    assert type(optimizer) is cls
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 5e-4]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]
    if name == "sgd":
        assert optimizer.defaults["momentum"] == 0.8 and optimizer.defaults["nesterov"] is True
    (weight.sum() + bias.sum()).backward()
    optimizer.step()
    assert not torch.equal(weight.detach(), torch.ones(2, 2))


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "rmsprop"])
def test_fused_optimizers_make_the_same_update(name):
    from lobell.training.optim import build_optimizer

    cfg = load_config(None, [f"optimizer.name={name}", "optimizer.momentum=0.9"]).optimizer
    torch.manual_seed(0)
    start, grads = torch.randn(64, 8), [torch.randn(64, 8) for _ in range(3)]
    results = {}
    for fused in (True, False):
        weight = torch.nn.Parameter(start.clone())
        optimizer = build_optimizer(cfg, [{"params": [weight], "lr": 1e-2, "weight_decay": 0.01}], fused=fused)
        assert bool(optimizer.defaults.get("fused")) is (fused and name != "rmsprop")  # RMSprop has no fused kernel
        for grad in grads:
            weight.grad = grad.clone()
            optimizer.step()
        results[fused] = weight.detach()
    assert not torch.equal(results[False], start)
    torch.testing.assert_close(results[True], results[False], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("switch, fused", [([], True), (["speed.fused_optimizer=false"], False)])
def test_the_fused_switch_reaches_the_training_optimizer(text_overrides, monkeypatch, switch, fused):
    import importlib

    optim, runner = (importlib.import_module(f"lobell.training.{name}") for name in ("optim", "runner"))
    built = []

    def spy(*args, **kwargs):
        built.append(optim.build_optimizer(*args, **kwargs))
        return built[-1]
    monkeypatch.setattr(runner, "build_optimizer", spy)
    train(load_config(None, text_overrides + ["epochs=1"] + switch), quiet=True)
    assert built and all(bool(o.defaults.get("fused")) is fused for o in built)


def test_schedules_shape_the_lr(text_overrides, tmp_path):
    def lrs(*extra):
        out = f"output_dir={tmp_path / extra[0].split('=')[1]}"
        run = train(load_config(None, text_overrides[:-1] + [out, *extra]), quiet=True).run_dir
        return [r["head"] for r in json.loads((run / "lrs.json").read_text())]

    step = lrs("scheduler=step", "scheduler.step_epochs=1", "scheduler.gamma=0.5", "scheduler.warmup_ratio=0",
               "epochs=2", "early_stopping.patience=null")
    assert step[0] == pytest.approx(3e-3) and step[-1] == pytest.approx(1.5e-3)
    cycle = lrs("scheduler=one-cycle", "scheduler.warmup_ratio=0.3", "epochs=1")
    peak = max(range(len(cycle)), key=cycle.__getitem__)
    assert cycle[peak] == pytest.approx(3e-3, rel=1e-2) and 0 < peak < len(cycle) - 1 and cycle[-1] < cycle[0]
    plateau = lrs("scheduler=plateau", "scheduler.patience=0", "scheduler.gamma=0.5", "optimizer.lr=1e-5",
                  "early_stopping.monitor=accuracy", "early_stopping.patience=null", "epochs=3")
    per_epoch = [plateau[0], plateau[25], plateau[50]]
    assert per_epoch == pytest.approx([1e-5, 1e-5, 5e-6]), "no improvement after epoch 1: epoch 3 runs at half"


def test_l1_penalty_shrinks_weights(text_overrides, tmp_path):
    from safetensors.torch import load_file

    def weight_norm(*extra):
        run = train(load_config(None, text_overrides[:-1] + [f"output_dir={tmp_path / str(len(extra))}", "epochs=1",
                                                             *extra]), quiet=True).run_dir
        return sum(v.abs().sum().item() for v in load_file(run / "model" / "model.safetensors").values())

    assert weight_norm("loss.l1=1e-3", "early_stopping.monitor=loss") < weight_norm()


def test_custom_loss_from_config_and_from_python(text_overrides, sentiment_files, tmp_path):
    import custom_losses

    custom_losses.CALLS.clear()
    train(load_config(None, text_overrides + ["loss.name=custom_losses:margin_loss", "epochs=1"]), quiet=True)
    assert len(custom_losses.CALLS) > 20
    with pytest.raises(LobellError, match="could not be imported"):
        train(load_config(None, text_overrides[:-1] + [f"output_dir={tmp_path / 'x'}", "loss.name=nowhere:fn"]),
              quiet=True)


def test_lr_finder_leaves_the_model_untouched(text_overrides, tmp_path):
    from lobell.tasks import build_adapter
    from lobell.training.lr_find import find_lr, lr_range_test

    cfg = load_config(None, text_overrides + [f"output_dir={tmp_path / 'lrf'}"])
    finding, path = find_lr(cfg, steps=40)
    assert path.is_file() and path.stat().st_size > 1000
    assert finding.lrs[0] <= finding.suggestion <= finding.lrs[-1]
    adapter = build_adapter(cfg, "text", "classification", ["neg", "pos"])
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    flags = [p.requires_grad for p in adapter.model.parameters()]
    from lobell.data.splits import Split
    from lobell.strategies.plans import build_plan
    from lobell.tasks import build_dataset, build_loader
    import numpy as np

    data = build_dataset(cfg, adapter, Split(["the film was good", "a bad plot"] * 8, np.array([1, 0] * 8), "x"))
    stage = build_plan(cfg.strategy, adapter.layer_map, 1)[0]
    lr_range_test(adapter, stage, cfg, build_loader(cfg, adapter, data, train=True),
                  lambda logits, targets: torch.nn.functional.cross_entropy(logits, targets), steps=20)
    after = adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert flags == [p.requires_grad for p in adapter.model.parameters()]


def test_bf16_autocast_trains_on_cpu_with_finite_loss(text_overrides):
    result = train(load_config(None, [o for o in text_overrides if o != "precision=fp32"] +
                               ["precision=bf16", "epochs=1"]), quiet=True)
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert all(torch.isfinite(torch.tensor(json.loads(line).get("train_loss", 0.0))) for line in lines)
    assert "mixed_precision" not in result.metrics  # run finished; precision is in the resolved config
    assert "precision: bf16" in (result.run_dir / "config.yaml").read_text()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_uses_a_gradient_scaler_on_gpu(text_overrides):
    result = train(load_config(None, [o for o in text_overrides if o != "precision=fp32"] +
                               ["precision=fp16", "epochs=1"]), quiet=True)
    assert result.metrics["validation"]["loss"] == result.metrics["validation"]["loss"]  # finite, not NaN
