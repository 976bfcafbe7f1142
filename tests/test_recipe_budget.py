"""The recipe's decisions for the recipe suite's cases (bench/recipe_suite.py, docs/benchmarks.md),
pinned with their reasons: the budget the user set and the measured domain distance change them."""

from __future__ import annotations

import pytest

from lobell.config import load_config
from lobell.recipe import FAR_GAIN, LORA_LR, Profile, decide

MINILM = 22_700_000
MOBILENET = 3_500_000
FAR = {"examples": 256, "accuracy": 0.74, "majority": 0.11, "gain": 0.71, "seconds": 1.0}  # fashion-mnist, measured
NEAR = {"examples": 256, "accuracy": 0.97, "majority": 0.11, "gain": 0.97, "seconds": 1.0}


def _decide(overrides: list[str], profile: Profile) -> tuple[dict, dict]:
    choices = decide(load_config(None, overrides), profile)
    return {k: v for c in choices for k, v in c.values.items()}, {c.name: c.reason for c in choices}


def _text(n: int, imbalance: float = 1.3) -> Profile:
    return Profile("text", "classification", "encoder", MINILM, n, 2, imbalance, 27)


def _image(n: int, probe: dict | None = None) -> Profile:
    return Profile("image", "classification", "cnn", MOBILENET, n, 10, 1.0, image_size=64, probe=probe)


@pytest.mark.parametrize("profile", [_text(200), _text(1000), _text(5000), _image(200), _image(1000, FAR)],
                         ids=["text-200", "text-1000", "text-5000", "image-200", "image-1000"])
def test_one_epoch_never_gets_a_head_only_or_staged_plan(profile):
    values, reasons = _decide(["epochs=1"], profile)
    assert values["strategy.name"] == "full"
    assert "epochs=1" in reasons["Layers"] and "warm-up" in reasons["Layers"]
    assert values["scheduler.warmup_ratio"] <= 0.1


def test_small_data_without_a_budget_still_unfreezes_gradually_or_trains_the_head():
    assert _decide([], _text(1000))[0]["strategy.name"] == "gradual"
    tiny, reasons = _decide([], _text(200))
    assert tiny["strategy.name"] == "feature-extraction" and "200 examples" in reasons["Layers"]
    assert _decide(["epochs=2"], _text(1000))[0]["strategy.name"] == "full", "2 epochs cannot run a gradual plan"
    assert _decide(["epochs=3"], _text(1000))[0]["strategy.name"] == "gradual"


def test_far_domain_moves_the_cnn_backbone_at_the_heads_lr():
    far, reasons = _decide([], _image(1000, FAR))
    near, _ = _decide([], _image(1000, NEAR))
    unprobed, _ = _decide([], _image(1000))
    # every layer at SGD 3e-3 (digits-64px: 0.906 vs 0.26 at 1e-2); near data: head 1e-2, backbone 1e-3
    assert far["strategy.backbone_lr_scale"] == 1.0 and far["optimizer.lr"] == pytest.approx(3e-3)
    assert near["strategy.backbone_lr_scale"] == unprobed["strategy.backbone_lr_scale"] == 0.1
    assert near["optimizer.lr"] == pytest.approx(1e-2)
    assert "linear probe" in reasons["Learning rate"] and f"{FAR['gain']:.2f} < {FAR_GAIN}" in reasons["Learning rate"]


def test_short_budget_moves_the_backbone_and_drops_augmentation():
    values, reasons = _decide(["epochs=1"], _image(1000, NEAR))
    assert values["strategy.backbone_lr_scale"] == 1.0 and values["augment"] == "none"
    assert values["optimizer.lr"] == pytest.approx(3e-3)
    assert "seen once" in reasons["Epochs"]
    assert "augment" not in _decide([], _image(1000, NEAR))[0], "with its own epochs the recipe keeps light"
    assert "augment" not in _decide(["epochs=1"], _text(1000))[0], "augmentation is an image key"


def test_user_choices_still_win_over_budget_rules():
    values, _ = _decide(["epochs=1", "strategy=gradual", "augment=light", "strategy.backbone_lr_scale=0.1"],
                        _image(1000, FAR))
    assert (values["strategy.name"], values["augment"], values["strategy.backbone_lr_scale"]) == ("gradual", "light", 0.1)


def test_imbalanced_text_gets_class_weights_with_the_ratio_in_the_reason():
    values, reasons = _decide(["epochs=1"], _text(1050, imbalance=20.0))
    assert values["loss.class_weights"] == "auto" and "20.0x" in reasons["Loss"]
    assert values["strategy.name"] == "full"


def test_lora_trains_its_adapters_at_a_higher_lr_than_full_fine_tuning():
    lora, reasons = _decide(["strategy=lora", "epochs=1"], _text(1050))
    full, _ = _decide(["epochs=1"], _text(1050))
    assert lora["optimizer.lr"] == LORA_LR > full["optimizer.lr"]
    assert "start at" in reasons["Learning rate"] or "starting at zero" in reasons["Learning rate"]
    assert "less than full fine-tuning at epochs=1" in reasons["Learning rate"], "the measured gap is said"
    assert "less than full" not in _decide(["strategy=lora"], _text(1050))[1]["Learning rate"]


def test_cnn_sgd_trains_without_gradient_clipping_unless_you_set_it():
    """digits-64px at epochs=1: clipping at 1.0 held SGD fine-tuning of MobileNetV2 at chance."""
    values, reasons = _decide(["epochs=1"], _image(1000, FAR))
    assert values["optimizer.name"] == "sgd" and values["max_grad_norm"] is None
    assert "clipping" in reasons["Optimizer"]
    assert _decide(["epochs=1", "max_grad_norm=2.0"], _image(1000, FAR))[0]["max_grad_norm"] == 2.0
    assert "max_grad_norm" not in _decide(["epochs=1"], _text(1000))[0], "text keeps the config's clipping"


@pytest.mark.parametrize("n, batch", [(200, 8), (1000, 16), (5000, 64), (60000, 64)])
def test_a_short_image_budget_buys_update_steps_with_a_smaller_batch(n, batch):
    """epochs=1, MobileNetV2 at SGD 3e-3: batch 64 / 32 / 16 gave digits-64px 0.31 / 0.89 / 0.97."""
    values, reasons = _decide(["epochs=1"], _image(n, FAR))
    assert values["batch_size"] == batch and "update steps" in reasons["Batch size"]
    assert _decide([], _image(n, FAR))[0]["batch_size"] == 64, "with its own epochs the recipe keeps 64"
    assert _decide(["epochs=1", "batch_size=32"], _image(n, FAR))[0]["batch_size"] == 32
    assert _decide(["epochs=1"], _text(n))[0]["batch_size"] == (16 if n < 2000 else 32), "text keeps its rule"


def test_far_images_train_every_layer_without_photo_augmentation_at_the_recipes_epochs():
    """digits-64px, 8 epochs: gradual 0.828; every layer with light augmentation 0.962, without 0.992."""
    far, reasons = _decide([], _image(1000, FAR))
    near, _ = _decide([], _image(1000, NEAR))
    assert (far["strategy.name"], far["augment"]) == ("full", "none")
    assert "probe gain 0.71" in reasons["Layers"] and "mirrored digit" in reasons["Epochs"]
    assert near["strategy.name"] == "gradual" and "augment" not in near
    assert _decide(["augment=light"], _image(1000, FAR))[0]["augment"] == "light"
