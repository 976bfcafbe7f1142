"""The object-detection adapter: a torchvision detector, its layer map over the backbone, save and load.

`model: torchvision/fasterrcnn` (or retinanet, fcos, ssdlite) with `backbone: torchvision/mobilenet_v2`
or `timm/resnet18`, or a torchvision pre-built detector by its full name
(`torchvision/fasterrcnn_mobilenet_v3_large_fpn`). Class ids are 0..C-1 outside; the torchvision
model sees 1..C (0 is its background).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lobell.errors import LobellError, nearest
from lobell.models.detection_build import (DETECTORS, DetectorSpec, body_prefix, build_backbone, build_detector,
                                           build_prebuilt)
from lobell.models.hub import find_weights, read_state_dict
from lobell.strategies.layer_map import LayerMap, build_layer_map

DEFAULT_BACKBONE = "torchvision/mobilenet_v2"  # the one backbone with real ImageNet weights offline here
_LARGE = 320  # images at least this side get torchvision's full 512 RoIs per image


def prebuilt_names() -> list[str]:
    import torchvision

    return [n for n in torchvision.models.list_models(module=torchvision.models.detection)
            if not n.startswith(("maskrcnn", "keypointrcnn"))]


def resolve_detector(name: str) -> str:
    """`torchvision/fasterrcnn`, `fcos`, `torchvision/fasterrcnn_mobilenet_v3_large_fpn` -> the detector name."""
    detector = name.removeprefix("torchvision/")
    if detector in DETECTORS or detector in prebuilt_names():
        return detector
    choices = list(DETECTORS) + prebuilt_names()
    raise LobellError(f"model '{name}' is not a detector lobell builds ({', '.join(DETECTORS)}, or a torchvision "
                      f"pre-built detector such as fasterrcnn_mobilenet_v3_large_fpn){nearest(detector, choices)}")


class DetectionAdapter:
    """A torchvision detector with a layer map: the backbone's stages, then neck and heads as the head group."""

    modality = "detection"

    def __init__(self, model: nn.Module, spec: DetectorSpec, class_names: list[str], name: str,
                 train_stem: bool = False):
        self.model, self.spec, self.class_names, self.name = model, spec, list(class_names), name
        self.layer_map: LayerMap = detection_layer_map(model, spec, train_stem)

    @classmethod
    def from_pretrained(cls, name: str, class_names: list[str], *, backbone: str | None = None,
                        weights: str | None = None, backbone_weights: str | None = None,
                        image_size: int | None = None, load_weights: bool = True, train_stem: bool = False,
                        fpn_channels: int = 256) -> DetectionAdapter:
        """Build a detector for `class_names` with pre-trained weights where they are found.

        Args:
            name: fasterrcnn, retinanet, fcos, ssdlite (on `backbone`), or a torchvision pre-built name.
            backbone: torchvision/<arch> or timm/<arch> (default torchvision/mobilenet_v2).
            weights: a pre-built detector's weights file (COCO-trained, any class count), or `random`;
                None: the torch hub cache, else one sentence on how to get them.
            backbone_weights: the backbone's file, `random`, or None for the weights its name stands for.
            image_size: the detector's resize target (shorter side); default torchvision's 800.
            load_weights: False builds the structure only (`lobell validate`, `lobell layers`).
            train_stem: False keeps the backbone's first group frozen in every stage (torchvision's habit).
        """
        from lobell.models.vision import resolve_name

        detector = resolve_detector(name)
        size = image_size or 800
        spec = DetectorSpec(detector, None, len(class_names), size, max(size, round(size * 1333 / 800)),
                            fpn_channels, roi_samples=512 if size >= _LARGE else 128)
        if detector in DETECTORS:
            library, arch = resolve_name(backbone or DEFAULT_BACKBONE)
            spec.backbone = f"{library}/{arch}"
            state = _weights(library, arch, spec.backbone, backbone_weights, load_weights, "backbone_weights")
            spec.frozen_batch_norm = state is not None
            model = build_detector(spec, build_backbone(spec, state))
        else:
            if backbone is not None:
                raise LobellError(f"model '{name}' is a pre-built detector with its own backbone; drop backbone, or "
                                  f"use model=torchvision/{detector.split('_')[0]} with backbone={backbone}")
            state = _weights("torchvision", detector, f"torchvision/{detector}", weights, load_weights)
            spec.frozen_batch_norm = state is not None
            model = build_prebuilt(spec, state, weights)
        return cls(model, spec, class_names, f"torchvision/{detector}", train_stem)

    @classmethod
    def load(cls, directory: Path) -> DetectionAdapter:
        """Reload a saved `model/` folder (docs/detection.md shows the same in plain torchvision)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config = json.loads((directory / "config.json").read_text())
        spec = DetectorSpec.from_dict(config)
        if spec.detector in DETECTORS:
            model = build_detector(spec, build_backbone(spec, None))
        else:
            model = build_prebuilt(spec, None, None)
        model.load_state_dict(load_file(directory / "model.safetensors"))
        return cls(model, spec, config["label_names"], config.get("base_model", str(directory)),
                   config.get("train_stem", False))

    def save(self, directory: Path, extra: dict | None = None) -> None:
        """model.safetensors (the whole detector) + config.json (the spec, label names) + lobell.json."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, directory / "model.safetensors")
        config = {**self.spec.to_dict(), "label_names": self.class_names, "base_model": self.name,
                  "train_stem": not self.layer_map.groups[0].frozen, "library": "torchvision"}
        (directory / "config.json").write_text(json.dumps(config, indent=2))
        (directory / "lobell.json").write_text(json.dumps({"modality": self.modality, "task": "object-detection",
                                                           "base_model": self.name, **(extra or {})}, indent=2))

    @property
    def num_outputs(self) -> int:
        return len(self.class_names)

    def forward(self, model: nn.Module, batch: dict):
        """Training mode: the detector's own losses (a dict; problems/detection.py sums them); eval mode:
        per image boxes, labels and scores (`predict`)."""
        return self.losses(model, batch) if model.training else self.predict(model, batch)

    def losses(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """The detector's own training losses (train mode): classification, box regression, objectness."""
        targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in batch["targets"]]
        return model(list(batch["pixel_values"]), targets)

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return sum(self.losses(model, batch).values())

    @torch.no_grad()
    def predict(self, model: nn.Module, batch: dict) -> list[dict[str, torch.Tensor]]:
        """Boxes (xyxy pixels of the input image), labels 0..C-1 and scores per image (eval mode)."""
        outputs = model(list(batch["pixel_values"]))
        return [{"boxes": o["boxes"], "labels": o["labels"] - 1, "scores": o["scores"]} for o in outputs]


def _weights(library: str, arch: str, name: str, weights: str | None, load: bool,
             setting: str = "model_weights") -> dict | None:
    if not load or weights == "random":
        return None
    return read_state_dict(find_weights(library, arch, name, weights, setting))


def detection_layer_map(model: nn.Module, spec: DetectorSpec, train_stem: bool) -> LayerMap:
    """The backbone trunk's stages as groups (stem first, frozen unless `train_stem`); neck + heads last."""
    body = body_prefix(model)
    head = [n for n, _ in model.named_parameters() if not n.startswith(body + ".")]
    source = f"{spec.backbone or spec.detector}: stem, each stage or block of the backbone; FPN and heads as the head"
    layer_map = build_layer_map(model, head, source=source)
    if not train_stem and len(layer_map.groups) > 1:
        layer_map.groups[0].frozen = True
    return layer_map
