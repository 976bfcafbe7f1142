"""COCO, YOLO and VOC read to the same boxes; each bad input is one error naming the file and row."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from detection_fixtures import CLASSES, edit_coco, scene_samples, write_all_formats

from lobell.data.detection import detect_format, read_detection
from lobell.errors import LobellError


@pytest.fixture()
def formats(tmp_path: Path) -> dict[str, Path]:
    return write_all_formats(tmp_path)


def _by_name(data) -> dict[str, tuple]:
    return {Path(s.image).name: (s.boxes, [data.class_names[i] for i in s.labels], s.width, s.height)
            for s in data.samples}


def test_each_format_is_detected_and_reads_to_the_same_boxes(formats, tmp_path):
    expected = {Path(s.image).name: s for s in scene_samples(tmp_path / "expected")}
    read = {}
    for name, path in formats.items():
        assert detect_format(path) == name
        data = read_detection(path)
        assert data.format == name and sorted(data.class_names) == CLASSES
        read[name] = _by_name(data)
        assert set(read[name]) == set(expected)
        for image, (boxes, labels, width, height) in read[name].items():
            truth = expected[image]
            np.testing.assert_allclose(boxes, truth.boxes, atol=1e-3)  # YOLO stores 6 decimals of a fraction
            assert labels == [CLASSES[i] for i in truth.labels]
            assert (width, height) == (80, 64)


def test_images_without_boxes_are_kept_as_negatives_and_said(formats):
    for path in formats.values():
        data = read_detection(path)
        negatives = [s for s in data.samples if Path(s.image).name == "scene3.png"]
        assert len(negatives) == 1 and negatives[0].boxes.shape == (0, 4)
        assert any("1 of 4 image(s) have no boxes; kept as negatives" in note for note in data.notes)


def test_validation_ids_follow_the_training_classes(formats):
    reordered = list(reversed(CLASSES))
    for path in formats.values():
        data = read_detection(path, "validation", class_names=reordered)
        assert data.class_names == reordered
        first = next(s for s in data.samples if Path(s.image).name == "scene0.png")
        assert [reordered[i] for i in first.labels] == ["bag", "trouser"]
    with pytest.raises(LobellError, match=r"class\(es\) sneaker, trouser that the training data does not have"):
        read_detection(formats["coco"], "validation", class_names=["bag"])


def test_coco_bad_rows_name_the_file_and_annotation(formats):
    path = formats["coco"]
    edit_coco(path, lambda d: d["annotations"][1].update(bbox=[5, 5, 0, 10]))
    with pytest.raises(LobellError, match=re.escape(f"'{path}' annotations[1] (id 2): box [5, 5, 5, 15]") +
                       ".*degenerate"):
        read_detection(path)
    edit_coco(path, lambda d: d["annotations"][1].update(bbox=[100, 5, 10, 10]))
    with pytest.raises(LobellError, match=r"annotations\[1\] .*lies outside the 80 x 64 image"):
        read_detection(path)
    edit_coco(path, lambda d: d["annotations"][1].update(bbox=[70, 5, 20, 10], category_id=9))
    with pytest.raises(LobellError, match=r"annotations\[1\] \(id 2\): category_id 9 is not among .* \(1, 2, 3\)"):
        read_detection(path)
    edit_coco(path, lambda d: d["annotations"][1].update(category_id=1, image_id=77))
    with pytest.raises(LobellError, match=r"annotations\[1\] \(id 2\): image_id 77 is not among the file's images"):
        read_detection(path)


def test_coco_overhanging_box_is_clipped_and_counted(formats):
    path = edit_coco(formats["coco"], lambda d: d["annotations"][1].update(bbox=[70, 5, 20, 10]))
    data = read_detection(path)
    assert data.samples[0].boxes[1].tolist() == [70, 5, 80, 15]
    assert any("clipped 1 box(es)" in note and "annotations[1]" in note for note in data.notes)


def test_coco_missing_image_and_wrong_size_are_named(formats):
    path = formats["coco"]
    edit_coco(path, lambda d: d["images"][2].update(width=160, height=128))
    with pytest.raises(LobellError, match=r"images\[2\] \(id 3\): says the image is 160 x 128 but .*scene2.png' is "
                                          r"80 x 64"):
        read_detection(path)
    edit_coco(path, lambda d: d["images"][2].update(width=80, height=64, file_name="images/gone.png"))
    with pytest.raises(LobellError, match=r"images\[2\] \(id 3\): image '.*gone.png' does not exist"):
        read_detection(path)


def test_yolo_bad_lines_name_the_file_and_line(formats):
    labels = Path(formats["yolo"]).parent / "labels" / "scene0.txt"
    good = labels.read_text()
    labels.write_text(good + "7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(LobellError, match=re.escape(f"'{labels}' line 3: class id 7 is not one of the 3 classes")):
        read_detection(formats["yolo"])
    labels.write_text(good + "1 40 30 10 10\n")
    with pytest.raises(LobellError, match=r"line 3: values .* are not normalised to 0-1"):
        read_detection(formats["yolo"])
    labels.write_text(good + "1 0.5 0.5 0 0.1\n")
    with pytest.raises(LobellError, match=r"line 3: box .* is degenerate"):
        read_detection(formats["yolo"])
    labels.write_text(good + "1 0.5 0.5\n")
    with pytest.raises(LobellError, match=r"line 3: has 3 values; a YOLO box line is 'class cx cy w h'"):
        read_detection(formats["yolo"])


def test_yolo_label_without_image_is_a_mismatched_tree(formats):
    orphan = Path(formats["yolo"]).parent / "labels" / "lost.txt"
    orphan.write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(LobellError, match=re.escape(f"label file '{orphan}' has no image") +
                       ".*the images and labels trees do not match"):
        read_detection(formats["yolo"])


def test_yolo_without_any_label_files_is_an_error(formats):
    for labels in (Path(formats["yolo"]).parent / "labels").glob("*.txt"):
        labels.unlink()
    with pytest.raises(LobellError, match=r"none of its 4 images has a label file \(expected e.g. '.*labels/"):
        read_detection(formats["yolo"])


def test_yolo_names_map_and_nc_are_checked(formats):
    yaml_path = Path(formats["yolo"])
    yaml_path.write_text(yaml_path.read_text() + "nc: 5\n")
    with pytest.raises(LobellError, match=r"nc is 5 but 'names' lists 3 classes"):
        read_detection(yaml_path)


def test_voc_bad_objects_name_the_file_and_object(formats):
    xml = Path(formats["voc"]) / "Annotations" / "scene0.xml"
    good = xml.read_text()
    xml.write_text(good.replace("<xmax>30</xmax>", "<xmax>2</xmax>"))
    with pytest.raises(LobellError, match=re.escape(f"'{xml}' object 1: box [4, 6, 2, 40]") + ".*degenerate"):
        read_detection(formats["voc"])
    xml.write_text(good.replace("<name>bag</name>", "<name>hat</name>"))
    with pytest.raises(LobellError, match=r"object 1: class 'hat' is not one of the training classes"):
        read_detection(formats["voc"], "validation", class_names=CLASSES)
    xml.write_text(good.replace("scene0.png", "missing.png"))
    with pytest.raises(LobellError, match=r"its image 'missing.png' is in none of"):
        read_detection(formats["voc"])


def test_unknown_layout_says_what_is_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LobellError, match="cannot tell its detection format"):
        detect_format(tmp_path)
    with pytest.raises(LobellError, match="is not a detection data set"):
        detect_format(tmp_path / "notes.txt")
