"""`lobell compare`: every strategy x seed on the same data; comparison.json and a self-contained comparison.html."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from lobell.cli import main


def test_compare_runs_each_strategy_and_seed_and_summarises_them(text_overrides, tmp_path, capsys):
    base = tmp_path / "cmp"
    argv = ["compare", *text_overrides, "epochs=1", "data.max_train_samples=100", f"output_dir={base}",
            "--strategies", "feature-extraction,full", "--seeds", "2", "--quiet"]
    assert main(argv) == 0
    assert f"comparison: {base / 'comparison.html'}" in capsys.readouterr().out
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == [
        "feature-extraction-seed0", "feature-extraction-seed1", "full-seed0", "full-seed1"]

    summary = json.loads((base / "comparison.json").read_text())
    assert list(summary["strategies"]) == ["feature-extraction", "full"]
    assert summary["monitor"] == "accuracy" and summary["data"] == {"train": 100, "validation": 80, "test": 80}
    for name, result in summary["strategies"].items():
        assert [run["seed"] for run in result["runs"]] == [0, 1]
        finals = [json.loads((base / f"{name}-seed{seed}" / "metrics.json").read_text()) for seed in (0, 1)]
        accuracies = [final["validation"]["accuracy"] for final in finals]
        assert result["validation"]["accuracy"]["values"] == accuracies
        assert result["validation"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
        assert result["validation"]["accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
        assert result["test"]["f1_macro"]["mean"] == pytest.approx(np.mean([f["test"]["f1_macro"] for f in finals]))
        assert all(seconds > 0 for seconds in result["wall_seconds"]["values"])
        configs = [(base / f"{name}-seed{seed}" / "config.yaml").read_text() for seed in (0, 1)]
        assert all(f"name: {name}" in c for c in configs) and "seed: 1" in configs[1]

    inputs = {p.parent.name: [json.loads(line)["input"] for line in p.read_text().splitlines()]
              for p in base.glob("*/predictions_validation.jsonl")}
    assert len(inputs) == 4 and len({tuple(v) for v in inputs.values()}) == 1  # the same data for every run

    text = (base / "comparison.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 2 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    mean, std = (summary["strategies"]["full"]["validation"]["accuracy"][k] for k in ("mean", "std"))
    assert f"{mean:.4f} &plusmn; {std:.4f}" in text and "feature-extraction" in text


def test_compare_checks_every_strategy_before_training_any(text_overrides, tmp_path, capsys):
    base = tmp_path / "cmp"
    assert main(["compare", *text_overrides, f"output_dir={base}", "--strategies", "full,gradul"]) == 2
    assert "unknown strategy 'gradul' (did you mean 'gradual'?)" in capsys.readouterr().err
    assert main(["compare", *text_overrides, "epochs=1", f"output_dir={base}",
                 "--strategies", "full,two-stage"]) == 2
    assert "frozen_epochs=1 leaves no epoch" in capsys.readouterr().err
    assert not base.exists()
