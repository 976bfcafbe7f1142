"""TransferLearningModel: the source notes' API over the same engine (freezing, training, prediction, save/load)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from vision_fixtures import COLOURS, colour_folders, colour_image, tiny_vit_weights  # noqa: F401

from lobell import load
from lobell.errors import LobellError
from lobell.vision_api import TransferLearningModel

pytestmark = pytest.mark.usefixtures("in_tmp_dir")  # default output_dir is runs/ under the cwd


def tiny_model(weights, tmp_path, **settings) -> TransferLearningModel:
    return TransferLearningModel("timm/test_vit", num_classes=2, model_weights=str(weights), data__image_size=32,
                                 optimizer__name="adamw", optimizer__lr=1e-3, batch_size=16, precision="fp32", output_dir=str(tmp_path / "run"), quiet=True,
                                 **settings)


def trainable_groups(model: TransferLearningModel) -> list[int]:
    return [g["index"] for g in model.layer_groups() if g["trainable"]]


def test_freezing_toggles_exactly_the_expected_groups(tiny_vit_weights, tmp_path):  # noqa: F811
    model = tiny_model(tiny_vit_weights, tmp_path)
    count = len(model.layer_groups())
    model.freeze_backbone()
    assert trainable_groups(model) == [count - 1]
    head = set(model.adapter.layer_map.groups[-1].param_names)
    assert all(p.requires_grad == (n in head) for n, p in model.adapter.model.named_parameters())
    model.freeze_to(-3)
    assert trainable_groups(model) == [count - 3, count - 2, count - 1]
    model.unfreeze_all()
    assert trainable_groups(model) == list(range(count))
    with pytest.raises(LobellError, match="layer groups"):
        model.freeze_to(count)


def test_train_head_then_all_on_a_folder_and_predict_any_image_kind(tiny_vit_weights, colour_folders, tmp_path):  # noqa: F811
    model = tiny_model(tiny_vit_weights, tmp_path)
    assert model.labels == ["0", "1"]
    model.freeze_backbone()
    frozen = {n: p.detach().clone() for n, p in model.adapter.model.named_parameters() if not p.requires_grad}
    first = model.train(colour_folders["train"], colour_folders["validation"], num_epochs=2)
    assert model.labels == ["blue", "red"]  # adopted from the class folders
    assert all(torch.equal(p, frozen[n]) for n, p in model.adapter.model.named_parameters() if n in frozen)
    model.unfreeze_all()
    second = model.train(colour_folders["train"], colour_folders["validation"], num_epochs=1)
    assert second["validation"]["accuracy"] >= 0.95 and len(model.history) == 2
    assert set(first["before"]) >= {"accuracy", "loss"} and second["before"] is not None
    rng = np.random.default_rng(7)
    red = colour_image(COLOURS["red"], rng)
    path = tmp_path / "blue.png"
    colour_image(COLOURS["blue"], rng).save(path)
    as_tensor = torch.from_numpy(np.array(red)).permute(2, 0, 1)
    assert model.predict([red, str(path), as_tensor]) == ["red", "blue", "red"]
    assert model.predict(red) == ["red"]
    labels, probs = model.predict(colour_folders["validation"], return_probabilities=True)
    assert len(labels) == 20 and probs.shape == (20, 2) and np.allclose(probs.sum(1), 1)
    assert model.evaluate(colour_folders["validation"])["accuracy"] >= 0.95


def test_pairs_with_fixed_labels_and_save_load_roundtrip(tiny_vit_weights, tmp_path):  # noqa: F811
    rng = np.random.default_rng(0)
    pairs = [(colour_image(COLOURS[c], rng), c) for c in ["red", "blue"] * 20]
    model = TransferLearningModel("timm/test_vit", labels=["red", "blue"], model_weights=str(tiny_vit_weights),
                                  data__image_size=32, optimizer__name="adamw", optimizer__lr=1e-3, batch_size=16, precision="fp32",
                                  output_dir=str(tmp_path / "run"), quiet=True)
    model.train(pairs[:30], pairs[30:], num_epochs=2)
    images = [image for image, _ in pairs[30:]]
    before = model.predict(images, return_probabilities=True)
    saved = model.save(tmp_path / "saved")
    assert json.loads((saved / "lobell.json").read_text())["labels"] == ["red", "blue"]
    for again in (TransferLearningModel.load(saved), load(saved)):
        labels, probs = again.predict(images, return_probabilities=True)
        assert labels == before[0] and np.allclose(probs, before[1], atol=1e-6)


def test_wrong_number_of_classes_and_unknown_labels_are_explained(tiny_vit_weights, colour_folders, tmp_path):  # noqa: F811
    model = TransferLearningModel("timm/test_vit", num_classes=3, model_weights=str(tiny_vit_weights), quiet=True)
    with pytest.raises(LobellError, match="has 2 classes .* num_classes=3"):
        model.train(colour_folders["train"], colour_folders["validation"], num_epochs=1)
    fixed = TransferLearningModel("timm/test_vit", labels=["cat", "dog"], model_weights=str(tiny_vit_weights))
    with pytest.raises(LobellError, match=r"\['blue', 'red'\] are not among"):
        fixed.train(colour_folders["train"], num_epochs=1)
    with pytest.raises(LobellError, match="pairs"):
        fixed.train([Image.new("RGB", (8, 8))], num_epochs=1)


def test_pretrained_false_starts_from_random_weights():
    a = TransferLearningModel("resnet18", num_classes=2, pretrained=False, seed=0)
    assert a.config.model_weights == "random" and a.config.seed == 0
    assert len(a.layer_groups()) >= 3
