"""time_budget and optimizer.lr: auto (train/budget.py, train/lr_probe.py, train/autotune.py)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from conftest import sentiment_rows
from lobell.config import load_config
from lobell.errors import LobellError
from lobell.strategies.plans import Stage
from lobell.training import autotune, runner
from lobell.training.budget import Budget, fit_epochs, parse_duration, resumed_budget
from lobell.training.lr_probe import pick_lr
from lobell.training.trial import sandbox


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("30s", 30), ("2h", 7200), ("90", 90), (90, 90),
                                           ("1h30m", 5400), (" 1.5m ", 90), ("45S", 45)])
def test_budgets_parse_to_seconds(text, seconds):
    assert parse_duration(text) == seconds
    assert load_config(None, [f"time_budget={text}"]).time_budget == seconds


@pytest.mark.parametrize("text", ["ten", "0", "-5", "10 minutes", "m", "true", "1d"])
def test_bad_budgets_are_one_clear_error(text):
    with pytest.raises(LobellError, match=r"time_budget=.* is invalid: .*(30s, 10m, 2h|more than 0)"):
        load_config(None, [f"time_budget={text}"])


def test_lr_takes_a_number_or_auto():
    assert load_config(None, ["optimizer.lr=auto"]).optimizer.lr == "auto"
    assert load_config(None, ["optimizer.lr=3e-4"]).optimizer.lr == 3e-4
    with pytest.raises(LobellError, match=r"optimizer.lr='fast' is invalid: .*or auto"):
        load_config(None, ["optimizer.lr=fast"])


def test_fit_epochs_keeps_the_ceiling_cuts_epochs_then_steps():
    # 10 steps of 1 s + 2 s evaluation = 12 s an epoch.
    assert (fit_epochs(100, 1.0, 10, 2.0, ceiling=3).epochs, fit_epochs(100, 1.0, 10, 2.0, ceiling=3).max_steps) == (3, None)
    assert fit_epochs(40, 1.0, 10, 2.0, ceiling=5).epochs == 3
    short = fit_epochs(8, 1.0, 10, 2.0, ceiling=5)
    assert (short.epochs, short.max_steps) == (1, 6) and "not one epoch fits" in short.reason
    assert fit_epochs(0.5, 1.0, 10, 2.0, ceiling=5).max_steps == 1  # at least one step


def test_trim_plan_keeps_the_first_epochs_of_every_stage_in_order():
    plan = [Stage("head only", 1, [2], {2: 1.0}), Stage("top 2 groups", 1, [1, 2], {1: 0.4, 2: 1.0}),
            Stage("all groups", 3, [0, 1, 2], {0: 0.4, 1: 0.4, 2: 1.0})]
    assert [(s.name, s.epochs) for s in autotune.trim_plan(plan, 3)] == [("head only", 1), ("top 2 groups", 1),
                                                                         ("all groups", 1)]
    assert [(s.name, s.epochs) for s in autotune.trim_plan(plan, 1)] == [("head only", 1)]
    assert autotune.trim_plan(plan, 9) == plan


def test_budget_stops_when_the_next_step_and_the_finish_would_not_fit():
    budget = Budget(60, time.time(), step_seconds=1.0, eval_seconds=2.0, final_seconds=5.0)
    assert not budget.out_of_time()
    late = Budget(60, time.time() - 50, step_seconds=1.0, eval_seconds=2.0, final_seconds=5.0)
    assert late.out_of_time()  # 10 s left < 1 + 2 + 5 + 5% of 60
    assert Budget(60, max_steps=4).steps_done(4) and not Budget(60, max_steps=4).steps_done(3)


def test_a_resumed_budget_counts_the_time_already_spent():
    first = Budget(100, time.time() - 30, step_seconds=0.5, max_steps=7)
    saved = json.loads(json.dumps(first.state_dict()))  # as a checkpoint's state.json keeps it
    resumed = resumed_budget(100, time.time(), saved)
    assert 69 < resumed.remaining() <= 70.5 and resumed.max_steps == 7 and resumed.step_seconds == 0.5


def test_pick_lr_takes_a_tenth_of_the_minimum_inside_the_swept_range():
    lrs = [10 ** (-6 + i / 4) for i in range(25)]  # 1e-6 .. 1
    losses = [2.0 - 0.05 * i for i in range(18)] + [1.2, 1.6, 3.0, 5.0, 8.0, 9.0, 9.5]
    lr, rule, reason = pick_lr(lrs, losses)
    assert rule == "min-loss/10" and lr == pytest.approx(lrs[17] / 10, rel=1e-2)
    assert lrs[0] <= lr <= lrs[-1] and "fell" in reason
    assert pick_lr(lrs[:3], [1.0, 5.0, 9.0])[0] == lrs[0]  # diverged at once: the smallest LR
    assert pick_lr(lrs, sorted(losses))[0] == lrs[0]  # only rose


def test_sandbox_restores_weights_batch_norm_statistics_and_rng():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected_draw = torch.rand(3, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    with sandbox(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        for _ in range(3):
            model(torch.randn(16, 4)).sum().backward()
            optimizer.step()
        model[0].weight.requires_grad_(False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model[0].weight.requires_grad and all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.rand(3), expected_draw)  # the trial's draws are undone too


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lr_auto_leaves_the_model_bit_identical_and_picks_an_lr_in_the_probed_range(text_overrides, tmp_path,
                                                                                      monkeypatch):
    from lobell.training import checkpoint, lr_probe

    seen, real_probe, real_epoch = {}, lr_probe.probe_lr, runner.train_epoch

    def probe_spy(adapter, *args, **kwargs):  # the model and RNGs as the run would start without a probe
        seen["before"], seen["rng"] = _weights(adapter.model), checkpoint.rng_state()
        found = real_probe(adapter, *args, **kwargs)
        seen["rng_after"] = checkpoint.rng_state()
        return found

    def epoch_spy(accelerator, adapter, model, *args, **kwargs):
        seen.setdefault("start", _weights(accelerator.unwrap_model(model)))
        return real_epoch(accelerator, adapter, model, *args, **kwargs)
    monkeypatch.setattr(lr_probe, "probe_lr", probe_spy)
    monkeypatch.setattr(runner, "train_epoch", epoch_spy)
    overrides = [o for o in text_overrides if not o.startswith(("output_dir", "optimizer.lr", "epochs"))]
    result = runner.train(load_config(None, [*overrides, "epochs=1", "data.max_train_samples=160",
                                             "optimizer.lr=auto", f"output_dir={tmp_path / 'auto'}"]), quiet=True)

    assert seen["before"].keys() == seen["start"].keys()
    assert all(torch.equal(seen["before"][k], seen["start"][k]) for k in seen["before"]), "the probe moved weights"
    assert torch.equal(seen["rng"]["torch"], seen["rng_after"]["torch"]) and seen["rng"]["python"] == seen[
        "rng_after"]["python"], "the probe left the RNG moved: the run would not train as without it"
    probe = json.loads((result.run_dir / "recipe.json").read_text())["lr_probe"]
    assert result.metrics["lr_probe"] == probe
    assert probe["swept"][0] <= probe["lr"] <= probe["swept"][1] and probe["rule"] and probe["reason"]
    assert len(probe["curve"]) >= 5 and 10 <= probe["steps"] <= 40
    assert load_config(result.run_dir / "config.yaml").optimizer.lr == probe["lr"]  # what a resumed run uses
    stage = json.loads((result.run_dir / "stages.json").read_text())[0]
    assert stage["lrs"]["head"] == pytest.approx(probe["lr"])  # and what this one trained with


def test_time_budget_stops_in_time_and_keeps_the_best_model(tiny_bert, tmp_path):
    from safetensors.torch import load_file

    for name, n, seed in [("train", 800, 1), ("validation", 80, 2), ("test", 80, 3)]:
        sentiment_rows(n, seed).to_csv(tmp_path / f"{name}.csv", index=False)
    # 5,000 epochs of 50 steps: over 15 minutes even at CI's fastest step seen (4.7 ms), so the plan must
    # cut epochs on any machine. Small data keeps the
    # setup before the clock can act (loading, tokenising: 20 s at a load of 24 on 2 cores) short.
    budget = 30.0
    cfg = load_config(None, [f"model={tiny_bert}", *(f"data.{n}={tmp_path / f'{n}.csv'}" for n in
                                                     ("train", "validation", "test")),
                             "optimizer.lr=3e-3", "strategy=full", "batch_size=16", "epochs=5000", "precision=fp32",
                             "early_stopping.patience=null", f"time_budget={budget:g}", f"output_dir={tmp_path / 'run'}"])
    start = time.time()
    result = runner.train(cfg, quiet=True)
    wall = time.time() - start
    assert wall <= 1.1 * budget, f"the run took {wall:.1f} s for a {budget:g} s budget"

    run = result.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    spent = json.loads((run / "recipe.json").read_text())["budget"]
    assert metrics["budget"] == spent and spent["stopped_on_time"] and spent["seconds"] == budget
    assert spent["measured"]["step_seconds"] > 0 and spent["plan"]["epochs"] < 5000
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1].get("stopped_on_time") and lines[-1]["epoch"] <= spent["plan"]["epochs"]
    # The saved model is the best evaluation's weights, and scores what that evaluation scored.
    best = max(lines[1:], key=lambda line: line["validation"]["accuracy"])
    assert metrics["best_epoch"] == best["epoch"]
    assert metrics["validation"]["accuracy"] == pytest.approx(best["validation"]["accuracy"])
    saved, kept = load_file(run / "model" / "model.safetensors"), load_file(run / "checkpoints" / "best" /
                                                                           "best.safetensors")
    assert saved.keys() <= kept.keys() and all(torch.equal(saved[k], kept[k]) for k in saved)


def test_a_resumed_run_keeps_its_plan_and_counts_the_budget_spent():
    cfg = load_config(None, ["time_budget=100", "epochs=4"])
    plan = [Stage("head only", 1, [1], {1: 1.0}), Stage("all groups", 3, [0, 1], {0: 0.4, 1: 1.0})]
    fitted = Budget(100, time.time() - 40)
    fitted.fit = fit_epochs(50, 1.0, 10, 2.0, ceiling=4)  # 12 s an epoch: 4 fit in 50 s
    fitted.fit.epochs = 2
    saved = json.loads(json.dumps(fitted.state_dict()))
    cfg2, plan2, tuning = autotune.before_training(cfg, None, None, {}, {}, plan, None, None, None, time.time(), saved)
    assert cfg2.epochs == 2 and [(s.name, s.epochs) for s in plan2] == [("head only", 1), ("all groups", 1)]
    assert 59 < tuning.budget.remaining() <= 60.5
