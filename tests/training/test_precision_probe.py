"""precision: auto decided by timed bf16 and fp32 steps (training/precision_probe.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from lobell.config import load_config
from lobell.data.splits import Split
from lobell.strategies.plans import build_plan
from lobell.tasks import build_adapter, build_dataset, build_loader
from lobell.training import precision_probe
from lobell.training.accelerator import make_accelerator, set_precision
from lobell.training.runner import train


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOBELL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "precision.json"


def _fake(fp32: float, bf16: float, calls: list):
    def measure(*args):
        calls.append(args)
        return fp32, bf16
    return measure


def _tiny(tiny_bert):
    cfg = load_config(None, [f"model={tiny_bert}", "batch_size=8", "strategy=full"])
    adapter = build_adapter(cfg, "text", "classification", ["neg", "pos"])
    data = build_dataset(cfg, adapter, Split(["the film was good", "a bad plot"] * 8, np.array([1, 0] * 8), "x"))
    stage = build_plan(cfg.strategy, adapter.layer_map, 1)[-1]
    loss = lambda logits, targets: torch.nn.functional.cross_entropy(logits, targets)  # noqa: E731
    return cfg, adapter, stage, build_loader(cfg, adapter, data, train=True), loss


@pytest.mark.parametrize("fp32, bf16, choice", [(1.0, 0.5, "bf16"), (1.0, 0.89, "bf16"), (1.0, 0.95, "no"),
                                                (1.0, 1.4, "no")])
def test_the_decision_follows_the_measured_times(fp32, bf16, choice):
    probe = precision_probe.decide(fp32, bf16)
    assert probe.choice == choice
    assert f"{bf16 * 1e3:.1f} ms" in probe.reason and f"{fp32 * 1e3:.1f} ms" in probe.reason


def test_the_probe_is_cached_per_machine_and_model(tiny_bert, cache):
    cfg, adapter, stage, loader, loss = _tiny(tiny_bert)
    accelerator, calls = make_accelerator("fp32"), []
    first = precision_probe.probe_precision(adapter, stage, cfg, loader, loss, accelerator, _fake(1.0, 0.5, calls))
    again = precision_probe.probe_precision(adapter, stage, cfg, loader, loss, accelerator, _fake(1.0, 2.0, calls))
    assert len(calls) == 1 and not first.cached and again.cached
    assert again.choice == first.choice == "bf16" and again.bf16_step_seconds == 0.5
    assert precision_probe.cpu_model_name() in first.key and torch.__version__ in first.key
    other = cfg.model_copy(update={"batch_size": 4})  # another shape: measured afresh
    assert precision_probe.probe_precision(adapter, stage, other, loader, loss, accelerator,
                                           _fake(1.0, 2.0, calls)).choice == "no"
    assert len(calls) == 2 and len(json.loads(cache.read_text())) == 2


def test_the_real_probe_leaves_weights_flags_and_rngs_untouched(tiny_bert, cache):
    cfg, adapter, stage, loader, loss = _tiny(tiny_bert)
    adapter.model.bert.embeddings.requires_grad_(False)  # the stage would train them: flags must come back
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    flags = [p.requires_grad for p in adapter.model.parameters()]
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    fp32, bf16 = precision_probe.measure_steps(adapter, stage, cfg, loader, loss, torch.device("cpu"))
    assert fp32 > 0 and bf16 > 0
    assert torch.equal(torch.rand(3), expected)
    after = adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert flags == [p.requires_grad for p in adapter.model.parameters()]


def test_switching_to_bf16_matches_an_accelerator_built_in_bf16():
    AcceleratorState._reset_state()
    built = Accelerator(mixed_precision="bf16", cpu=True)
    expected = {k: v for k, v in vars(built).items() if not k.startswith("_") and _plain(v)}
    switched = make_accelerator("fp32")
    set_precision(switched, "bf16")
    with switched.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    assert switched.mixed_precision == "bf16"
    assert {k: v for k, v in vars(switched).items() if not k.startswith("_") and _plain(v)} == expected
    set_precision(switched, "no")
    with switched.autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_a_run_records_the_probe_in_recipe_json_and_trains_in_its_choice(text_overrides, cache, monkeypatch):
    calls = []
    monkeypatch.setattr(precision_probe, "measure_steps", _fake(0.010, 0.004, calls))
    overrides = [o for o in text_overrides if o != "precision=fp32"] + ["precision=auto", "epochs=1"]
    seen = []
    monkeypatch.setattr(torch, "autocast", _spy(torch.autocast, seen))
    result = train(load_config(None, overrides), quiet=True)
    recorded = json.loads((result.run_dir / "recipe.json").read_text())["precision"]
    assert recorded["choice"] == "bf16" and recorded["cached"] is False and len(calls) == 1
    assert recorded["bf16_step_seconds"] == 0.004 and "bf16 4.0 ms vs fp32 10.0 ms" in recorded["reason"]
    assert torch.bfloat16 in seen  # the run's steps ran under bf16 autocast
    again = train(load_config(None, overrides + [f"output_dir={result.run_dir.parent / 'again'}"]), quiet=True)
    assert json.loads((again.run_dir / "recipe.json").read_text())["precision"]["cached"] is True
    assert len(calls) == 1


def _spy(autocast, seen: list):
    def spying(*args, **kwargs):
        seen.append(kwargs.get("dtype"))
        return autocast(*args, **kwargs)
    return spying


def _plain(value) -> bool:
    return isinstance(value, (bool, int, float, str, type(None)))
