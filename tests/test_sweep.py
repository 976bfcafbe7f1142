"""`lobell sweep`: Optuna trials as run folders, grid and TPE, the shared feature cache, continuing a killed sweep."""

from __future__ import annotations

import json

import optuna
import pytest

from lobell.cli import main
from lobell.errors import LobellError
from lobell.sweep import combinations, parse_items, sweep
from lobell.training import runner

QUICK = ["epochs=1", "data.max_train_samples=100", "strategy=feature-extraction"]


def _trials(base):
    return json.loads((base / "sweep.json").read_text())["trials"]


def test_grid_mode_runs_every_combination_sharing_one_feature_cache(text_overrides, tmp_path, capsys):
    base = tmp_path / "grid"
    assert main(["sweep", *text_overrides, *QUICK, f"output_dir={base}", "optimizer.lr=1e-3,1e-2", "seed=0,1",
                 "--quiet"]) == 0
    assert f"sweep: {base / 'sweep.html'}" in capsys.readouterr().out
    trials = _trials(base)
    expected = combinations(parse_items(["optimizer.lr=1e-3,1e-2", "seed=0,1"])[1])
    assert sorted(map(json.dumps, (t["params"] for t in trials))) == sorted(map(json.dumps, expected))
    assert sorted(p.name for p in base.iterdir() if p.name.startswith("trial-")) == [f"trial-00{i}" for i in range(4)]
    # The frozen backbone ran once: one cached file, read back by every later trial.
    assert len(list((base / "feature-cache").glob("features-*.pt"))) == 1
    from_disk = [json.loads((base / f"trial-00{i}" / "metrics.json").read_text())["timing"]["feature_cache_from_disk"]
                 for i in range(4)]
    assert from_disk == [False, True, True, True]


def test_a_tpe_sweep_leaves_run_folders_and_names_the_best_config(text_overrides, tmp_path):
    base = tmp_path / "tpe"
    result = sweep(None, [*text_overrides, *QUICK, f"output_dir={base}", "optimizer.lr=1e-4..3e-2"],
                   trials=3, quiet=True)
    scores = {}
    for number in range(3):
        metrics = json.loads((base / f"trial-00{number}" / "metrics.json").read_text())
        scores[number] = metrics["validation"]["accuracy"]
        assert (base / f"trial-00{number}" / "model").is_dir()
    best = result.summary["best"]
    assert best["value"] == max(scores.values()) and scores[best["number"]] == best["value"]
    assert best["overrides"] == [f"optimizer.lr={best['params']['optimizer.lr']}"]
    assert 1e-4 <= best["params"]["optimizer.lr"] <= 3e-2
    page = (base / "sweep.html").read_text()
    assert "Best: trial" in page and 'href="trial-000/report.html"' in page


def test_a_killed_sweep_continues_without_redoing_finished_trials(text_overrides, tmp_path, monkeypatch):
    base, calls, real_train = tmp_path / "killed", [], runner.train
    items = [*text_overrides, *QUICK, f"output_dir={base}", "optimizer.lr=1e-3,3e-3,1e-2"]

    def killed_on_second(cfg, **kwargs):
        calls.append(cfg.output_dir)
        if len(calls) == 2:
            raise SystemExit(137)  # no cleanup runs, as with SIGKILL: the store still says RUNNING
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(runner, "train", killed_on_second)
    with pytest.raises(SystemExit):
        sweep(None, items, quiet=True)
    study = optuna.load_study(study_name="lobell-sweep", storage=f"sqlite:///{base / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]
    killed_params, first = study.trials[1].params, (base / "trial-000" / "metrics.json").stat().st_mtime_ns

    calls.clear()
    monkeypatch.setattr(runner, "train", lambda cfg, **kw: calls.append(cfg.output_dir) or real_train(cfg, **kw))
    result = sweep(None, items, quiet=True)
    assert len(calls) == 2  # the killed trial again, then the grid's last point; trial 0 kept
    assert (base / "trial-000" / "metrics.json").stat().st_mtime_ns == first
    trials = result.summary["trials"]
    assert [t["state"] for t in trials] == ["complete", "fail", "complete", "complete"]
    assert trials[2]["retry_of"] == 1 and trials[2]["params"] == killed_params
    assert sorted(t["params"]["optimizer.lr"] for t in trials if t["state"] == "complete") == ["1e-2", "1e-3", "3e-3"]


@pytest.mark.parametrize("items, message", [
    (["optimizer.lr=1e-3"], "at least one searched key"),
    (["optimizer.lr=1e-3,,1e-2"], "list each value once"),
    (["optimizer.lr=1e-2..1e-3"], "low end must be below"),
    (["optimizer.lr=a..b"], "a range is two numbers"),
])
def test_bad_search_specs_are_one_clear_error(items, message):
    with pytest.raises(LobellError, match=message):
        parse_items(items)


def test_a_bad_listed_value_is_refused_before_any_trial(text_overrides, tmp_path):
    with pytest.raises(LobellError, match="optimizer.name"):
        sweep(None, [*text_overrides, f"output_dir={tmp_path / 's'}", "optimizer.name=adamw,fastest"], quiet=True)
    assert not (tmp_path / "s").exists()


def test_on_epoch_true_ends_a_run_there_keeping_a_complete_folder(text_overrides):
    from lobell.config import load_config

    seen = []
    result = runner.train(load_config(None, [*text_overrides, "epochs=3"]), quiet=True,
                          on_epoch=lambda epoch, metrics: seen.append((epoch, metrics["accuracy"])) or epoch == 1)
    assert [epoch for epoch, _ in seen] == [1]  # the pruner's stop is taken at once
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    assert (result.run_dir / "model").is_dir() and result.metrics["best_epoch"] == 1
