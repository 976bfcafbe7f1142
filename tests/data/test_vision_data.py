"""Image data: folders and tables, bad images, RGB conversion, preprocessing, augmentation, mixing, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from vision_fixtures import colour_folders, make_class_folders, make_image_table  # noqa: F401

from lobell.config import load_config
from lobell.data.image import (ImageReader, MixBatches, Preprocessing, ShuffledBatches, image_problem, open_rgb,
                               to_rgb)
from lobell.errors import LobellError
from lobell.tasks import load_task_splits


def test_class_folders_give_paths_and_labels(colour_folders):  # noqa: F811
    paths, labels, frame = ImageReader()(colour_folders["train"], "image", "label", "classification")
    assert len(paths) == 80 and sorted(set(labels)) == ["blue", "red"]
    assert all(str(colour_folders["train"] / label) in path for path, label in zip(paths, labels))
    assert list(frame.columns) == ["image", "label"]


def test_csv_paths_are_relative_to_the_file(tmp_path):
    table = make_image_table(tmp_path, [{"colour": "red", "label": "r"}, {"colour": "blue", "label": "b"}])
    paths, labels, _ = ImageReader()(table, "image", "label", "classification")
    assert paths == [str(tmp_path / "images/data_0.png"), str(tmp_path / "images/data_1.png")]
    assert labels == ["r", "b"]


def test_jsonl_multi_label_and_regression_tables(tmp_path):
    rows = [{"colour": "red", "tags": "warm|bright", "value": 1.5}, {"colour": "blue", "tags": "cold", "value": -2}]
    table = make_image_table(tmp_path, rows, "data.jsonl")
    _, tags, _ = ImageReader()(table, "image", "tags", "multi-label")
    assert tags == [["warm", "bright"], ["cold"]]
    _, values, _ = ImageReader()(table, "image", "value", "regression")
    assert values == [1.5, -2.0]


def test_missing_path_column_suggests_the_key(tmp_path):
    table = make_image_table(tmp_path, [{"colour": "red", "label": "r"}])
    with pytest.raises(LobellError, match=r"no column 'img' \(data.image_column\)"):
        ImageReader()(table, "img", "label", "classification")


def test_folder_without_class_folders_is_explained(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(LobellError, match="holds image files but no class sub-folders"):
        ImageReader()(tmp_path, "image", "label", "classification")
    with pytest.raises(LobellError, match="needs a CSV or JSONL"):
        ImageReader()(tmp_path, "image", "label", "regression")


def _bad_images(root):
    make_class_folders(root, 3)
    (root / "red" / "empty.png").write_bytes(b"")
    (root / "blue" / "noise.jpg").write_bytes(b"this is not an image")
    png = (root / "red" / "0.png").read_bytes()
    (root / "red" / "truncated.png").write_bytes(png[: len(png) // 2])
    return root


@pytest.mark.parametrize("name, reason", [("empty.png", "empty"), ("noise.jpg", "cannot identify"),
                                          ("truncated.png", "truncated")])
def test_each_kind_of_bad_image_is_named(tmp_path, name, reason):
    _bad_images(tmp_path)
    path = next(tmp_path.rglob(name))
    assert reason in image_problem(path)
    assert image_problem(tmp_path / "red" / "0.png") is None


def test_bad_image_stops_with_one_error_naming_the_file(tmp_path):
    _bad_images(tmp_path)
    with pytest.raises(LobellError) as error:
        ImageReader()(tmp_path, "image", "label", "classification")
    message = str(error.value)
    assert message.startswith(f"image '{tmp_path / 'blue' / 'noise.jpg'}'")  # the first bad file, by name
    assert "cannot identify image file;" in message and "skip_bad_images" in message and "\n" not in message


def test_skip_mode_skips_and_counts(tmp_path):
    _bad_images(tmp_path)
    reader = ImageReader(skip_bad=True)
    paths, labels, frame = reader(tmp_path, "image", "label", "classification")
    assert len(paths) == len(labels) == len(frame) == 6
    assert sorted(p.split("/")[-1] for p, _ in reader.skipped) == ["empty.png", "noise.jpg", "truncated.png"]
    assert reader.notes()[0].startswith("skipped 3 unreadable image(s)")


def test_skipped_images_are_noted_in_the_splits(tmp_path):
    _bad_images(tmp_path / "train")
    cfg = load_config(None, ["task=image-classification", f"data.train={tmp_path / 'train'}",
                             "data.skip_bad_images=true", "data.val_fraction=0.34"])
    splits = load_task_splits(cfg, "image", "classification")
    assert len(splits.train) + len(splits.validation) == 6
    assert any(note.startswith("skipped 3 unreadable") for note in splits.notes)


@pytest.mark.parametrize("mode, make", [
    ("L", lambda: Image.fromarray(np.full((4, 4), 100, np.uint8))),
    ("I;16", lambda: Image.fromarray(np.full((4, 4), 100 * 257, np.uint16))),
    ("CMYK", lambda: Image.new("CMYK", (4, 4), (0, 0, 0, 0))),
    ("RGBA", lambda: Image.new("RGBA", (4, 4), (10, 20, 30, 0))),
    ("P", lambda: Image.new("P", (4, 4), 0)),
])
def test_every_mode_becomes_8_bit_rgb(mode, make):
    image = make()
    assert image.mode == mode
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (4, 4)
    expected = {"L": (100, 100, 100), "I;16": (100, 100, 100), "CMYK": (255, 255, 255),
                "RGBA": (255, 255, 255)}  # 16-bit scaled to 8; a fully transparent pixel shows the white background
    if mode in expected:
        assert rgb.getpixel((0, 0)) == expected[mode]


def test_tensors_and_arrays_open_as_images():
    from_uint8 = open_rgb(torch.full((3, 5, 6), 200, dtype=torch.uint8))
    from_float = open_rgb(torch.full((1, 5, 6), 0.5))
    from_array = open_rgb(np.zeros((5, 6, 3), np.uint8))
    assert from_uint8.size == from_float.size == from_array.size == (6, 5)
    assert from_uint8.getpixel((0, 0)) == (200, 200, 200) and from_float.getpixel((0, 0))[0] in (127, 128)


def test_unreadable_image_at_load_time_names_the_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"junk")
    with pytest.raises(LobellError, match="x.png"):
        open_rgb(tmp_path / "x.png")


def test_eval_transform_resizes_crops_and_normalises():
    prep = Preprocessing(size=32, resize=36, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    out = prep.eval_transform()(Image.new("RGB", (80, 40), (255, 0, 0)))
    assert out.shape == (3, 32, 32)
    assert torch.allclose(out[0], torch.ones(32, 32)) and torch.allclose(out[1], -torch.ones(32, 32))


@pytest.mark.parametrize("augment", ["none", "light", "strong"])
def test_augment_presets_keep_the_model_input_size(augment):
    prep = Preprocessing(size=24, resize=28)
    torch.manual_seed(0)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    transform = prep.train_transform(augment)
    outs = [transform(image) for _ in range(3)]
    assert all(o.shape == (3, 24, 24) for o in outs)
    assert torch.equal(outs[0], outs[1]) == (augment == "none")  # only `none` is deterministic


def test_shuffled_batches_reshuffle_per_epoch_and_drop_a_lone_last_example():
    sampler = ShuffledBatches(size=9, batch_size=4, seed=0)
    first = list(sampler)
    assert len(sampler) == len(first) == 2 and all(len(b) == 4 for b in first)  # 4 + 4, the single 9th dropped
    sampler.set_epoch(5)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert len(ShuffledBatches(10, 4)) == len(list(ShuffledBatches(10, 4))) == 3  # a last batch of 2 stays
    assert len(ShuffledBatches(1, 4)) == 1


def _batch(n: int, classes: int):
    def collate(items):
        return {"pixel_values": torch.stack([i["pixel_values"] for i in items]),
                "targets": torch.tensor([i["target"] for i in items]), "index": torch.arange(len(items))}
    items = [{"pixel_values": torch.full((3, 8, 8), float(i)), "target": i % classes} for i in range(n)]
    return collate, items


@pytest.mark.parametrize("mixup, cutmix", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixing_gives_soft_targets_that_match_the_pixels(mixup, cutmix):
    torch.manual_seed(0)
    collate, items = _batch(4, classes=4)
    batch = MixBatches(collate, 4, mixup, cutmix, prob=1.0, switch_prob=0.5)(items)
    targets, pixels = batch["targets"], batch["pixel_values"]
    assert targets.shape == (4, 4) and torch.allclose(targets.sum(1), torch.ones(4))
    # Example 0 (all zeros, class 0) is mixed with example 3 (all threes, class 3): the pixels' mean
    # tells how much of each it holds, and its target must say the same.
    share_of_0 = (3.0 - pixels[0].mean()) / 3.0
    assert 0 < share_of_0 < 1
    assert torch.isclose(targets[0, 0], share_of_0, atol=1e-5)
    assert torch.isclose(targets[0, 3], 1 - share_of_0, atol=1e-5)


def test_mixing_with_prob_zero_only_one_hot_encodes():
    collate, items = _batch(4, classes=3)
    batch = MixBatches(collate, 3, 0.4, 0.0, prob=0.0, switch_prob=0.5)(items)
    assert torch.equal(batch["targets"], torch.eye(3)[[0, 1, 2, 0]])
    assert torch.equal(batch["pixel_values"][1], torch.full((3, 8, 8), 1.0))


def test_a_relative_path_outside_the_data_folder_is_refused_with_its_row(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "outside.png")
    Image.new("RGB", (8, 8), "red").save(data / "inside.png")
    (data / "train.csv").write_text("image,label\ninside.png,a\n../outside.png,b\n")
    with pytest.raises(LobellError) as error:
        ImageReader()(data / "train.csv", "image", "label", "classification")
    message = str(error.value)
    assert "row 3" in message and "'../outside.png' points outside" in message and "\n" not in message
    # An absolute path is the user's explicit choice: taken as given.
    (data / "train.csv").write_text(f"image,label\ninside.png,a\n{tmp_path / 'outside.png'},b\n")
    paths, labels, _ = ImageReader()(data / "train.csv", "image", "label", "classification")
    assert paths[1] == str(tmp_path / "outside.png") and labels == ["a", "b"]


def test_a_huge_jpeg_is_decoded_at_reduced_scale(tmp_path):
    from lobell.data import image as image_module

    path = tmp_path / "huge.jpg"
    Image.new("RGB", (8000, 6000), (200, 30, 30)).save(path, quality=50)  # 48 MP: 144 MB decoded in full
    assert image_problem(path) is None
    opened = open_rgb(path)
    assert opened.width * opened.height <= 4 * image_module.DRAFT_SIDE ** 2  # libjpeg's 1/4 scale: 2000 x 1500
    assert min(opened.size) >= image_module.DRAFT_SIDE
    assert np.asarray(opened)[10, 10].tolist() == pytest.approx([200, 30, 30], abs=4)


def test_an_image_too_large_to_decode_safely_is_named(tmp_path, monkeypatch):
    from lobell.data import image as image_module

    monkeypatch.setattr(image_module, "MAX_DECODED_PIXELS", 4_000_000)
    path = tmp_path / "poster.png"
    Image.new("RGB", (2500, 2000), "blue").save(path)
    reason = image_problem(path)
    assert reason is not None and "2500 x 2000 pixels" in reason and "downscale" in reason
    with pytest.raises(LobellError, match="poster.png.*2500 x 2000 pixels"):
        open_rgb(path)
    # A larger JPEG is fine: it decodes at half scale (3 MP), under the bound.
    Image.new("RGB", (4000, 3000), "blue").save(tmp_path / "photo.jpg")
    assert image_problem(tmp_path / "photo.jpg") is None and open_rgb(tmp_path / "photo.jpg").size == (2000, 1500)
