"""Build torchvision detectors (Faster R-CNN, RetinaNet, FCOS, SSDlite) on a timm or torchvision backbone.

The backbone becomes `backbone.body` (multi-scale feature maps named '0', '1', '2'), with a
feature pyramid as `backbone.fpn` for the detectors that use one: the same module names and
state-dict keys as torchvision's own `BackboneWithFPN`, so plain torchvision reloads the weights.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
from torch import nn

from lobell.errors import LobellError

DETECTORS = ("fasterrcnn", "retinanet", "fcos", "ssdlite")
_LEVELS = 3  # feature maps taken from the backbone: its last three stages (strides 8, 16, 32 on most CNNs)
_PROBE = 256  # side of the blank image run once through a torchvision backbone to find its stages


@dataclass
class DetectorSpec:
    """Everything that fixes a detector's structure: saved as the model folder's config.json."""

    detector: str  # fasterrcnn | retinanet | fcos | ssdlite | a torchvision pre-built detector name
    backbone: str | None  # torchvision/<arch> or timm/<arch>; None for a pre-built detector
    num_classes: int  # object classes; the torchvision model has one more (0 is background)
    min_size: int = 800  # the detector's own resize: shorter side (torchvision's default 800)
    max_size: int = 1333
    fpn_channels: int = 256
    frozen_batch_norm: bool = False  # BatchNorm2d -> FrozenBatchNorm2d in the backbone (pre-trained weights)
    image_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    image_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    return_layers: dict[str, str] = field(default_factory=dict)  # torchvision body: child name -> level name
    timm_levels: list[int] = field(default_factory=list)  # timm body: which feature_info entries
    in_channels: list[int] = field(default_factory=list)  # of the backbone levels (the FPN's inputs)
    strides: list[int] = field(default_factory=list)  # of the levels the head reads (FPN extras included)
    # Faster R-CNN: RoIs sampled per image for the box head. torchvision's 512 suits 800 px photos
    # with many objects; small images hold a few objects, and 128 costs a quarter of the box head.
    roi_samples: int = 512

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DetectorSpec:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class FeatureBackbone(nn.Module):
    """Multi-scale features of a classification backbone, through an optional FPN; `out_channels` for the heads."""

    def __init__(self, body: nn.Module, in_channels: list[int], fpn: nn.Module | None, out_channels, timm_levels=()):
        super().__init__()
        self.body, self.fpn, self.out_channels = body, fpn, out_channels
        self.in_channels = in_channels
        self.timm_levels = list(timm_levels)

    def forward(self, x: torch.Tensor) -> OrderedDict:
        features = self.body(x)
        if isinstance(features, (list, tuple)):  # timm's features_only model: a list over all its stages
            features = OrderedDict((str(i), features[k]) for i, k in enumerate(self.timm_levels))
        return self.fpn(features) if self.fpn is not None else features


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """BatchNorm2d -> torchvision's FrozenBatchNorm2d (same buffers): what torchvision's detectors do
    on pre-trained backbones, because detection batches are too small for batch statistics."""
    from torchvision.ops import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


def torchvision_body(arch: str, state: dict | None, spec: DetectorSpec) -> tuple[nn.Module, list[int], list[int]]:
    """(IntermediateLayerGetter over the last stages, their channels, their strides) of a torchvision classifier."""
    import torchvision
    from torchvision.models._utils import IntermediateLayerGetter

    model = torchvision.models.get_model(arch, weights=None)
    if state is not None:
        keys = set(model.state_dict())
        missing = [k for k in keys if k not in state and not _is_head_key(k)]
        if missing:
            raise LobellError(f"backbone weights do not fit torchvision/{arch}: missing {', '.join(sorted(missing)[:3])}"
                              f" (and {max(len(missing) - 3, 0)} more)")
        model.load_state_dict({k: v for k, v in state.items() if k in keys and not _is_head_key(k)}, strict=False)
    trunk = model.features if isinstance(getattr(model, "features", None), nn.Sequential) else model
    children = [(n, c) for n, c in trunk.named_children() if n not in ("avgpool", "fc", "classifier", "head", "heads")]
    shapes = _probe(children)
    if not spec.return_layers:
        spec.return_layers = _pick_levels([(name, _PROBE // shape[-1], shape[1]) for name, shape in shapes])
    container = trunk if trunk is not model else nn.Sequential(OrderedDict(children))
    body = IntermediateLayerGetter(container, spec.return_layers)
    by_name = dict(shapes)
    names = list(spec.return_layers)
    return body, [by_name[n][1] for n in names], [_PROBE // by_name[n][-1] for n in names]


def timm_body(arch: str, state: dict | None, spec: DetectorSpec) -> tuple[nn.Module, list[int], list[int]]:
    """timm's own multi-scale extractor (`features_only=True`), pre-trained weights loaded by timm."""
    import timm

    kwargs = {"features_only": True}
    if state is not None:
        cfg = timm.models.get_pretrained_cfg(arch)
        classifiers = (cfg.classifier,) if cfg and isinstance(cfg.classifier, str) else tuple(cfg.classifier or ()) \
            if cfg else ()
        state = {k: v for k, v in state.items() if not any(k == c or k.startswith(c + ".") for c in classifiers)}
        overlay = {"state_dict": state, "num_classes": 0, "label_offset": 0}
        try:
            body = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        except (RuntimeError, KeyError) as exc:
            detail = " ".join(line.strip() for line in str(exc).splitlines()[:2])[:300]
            raise LobellError(f"backbone weights do not fit timm/{arch}: {detail}") from None
    else:
        body = timm.create_model(arch, pretrained=False, **kwargs)
    info = list(zip(range(len(body.feature_info)), body.feature_info.reduction(), body.feature_info.channels()))
    if not spec.timm_levels:
        spec.timm_levels = [int(i) for i in _pick_levels(info)]
    chosen = [info[i] for i in spec.timm_levels]
    return body, [c for _, _, c in chosen], [r for _, r, _ in chosen]


def _is_head_key(key: str) -> bool:
    return key.split(".")[0] in ("fc", "classifier", "head", "heads")


def _probe(children: list[tuple[str, nn.Module]]) -> list[tuple[str, tuple]]:
    """Each child's output shape for a blank image; stops at the first that is not a feature map."""
    shapes, x = [], torch.zeros(1, 3, _PROBE, _PROBE)
    with torch.no_grad():
        for name, child in children:
            training = child.training
            x = child.eval()(x)
            child.train(training)
            if x.ndim != 4:
                break
            shapes.append((name, tuple(x.shape)))
    return shapes


def _pick_levels(entries: list[tuple]) -> dict[str, str] | list:
    """The last entry of each stride >= 8, the last three of those: (name, stride, channels) -> levels."""
    last: dict[int, object] = {}
    for name, stride, _ in entries:
        if stride >= 8:
            last[stride] = name
    chosen = [last[s] for s in sorted(last)][-_LEVELS:]
    if len(chosen) < 2:
        raise LobellError("the backbone has no stages of decreasing resolution for a feature pyramid; pick a CNN "
                          "backbone (torchvision/mobilenet_v2, timm/resnet18, ...)")
    if isinstance(chosen[0], str):
        return {name: str(i) for i, name in enumerate(chosen)}
    return chosen


def build_backbone(spec: DetectorSpec, state: dict | None) -> FeatureBackbone:
    """The body with an FPN (P6/P7 extra levels for RetinaNet and FCOS, a max-pool level for Faster R-CNN)."""
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

    library, _, arch = spec.backbone.partition("/")
    body, channels, strides = (timm_body if library == "timm" else torchvision_body)(arch, state, spec)
    spec.in_channels = list(channels)
    if spec.frozen_batch_norm:
        freeze_batch_norm(body)
    if spec.detector == "ssdlite":  # SSD heads read the stages directly
        spec.strides = strides
        return FeatureBackbone(body, channels, None, channels, spec.timm_levels)
    width = spec.fpn_channels
    if spec.detector == "fcos" and width % 32:
        raise LobellError(f"fpn_channels {width}: FCOS's heads use 32-group GroupNorm, so it must be a multiple of 32")
    extra = LastLevelMaxPool() if spec.detector == "fasterrcnn" else LastLevelP6P7(width, width)
    spec.strides = strides + ([strides[-1] * 2] if spec.detector == "fasterrcnn" else [strides[-1] * 2, strides[-1] * 4])
    fpn = FeaturePyramidNetwork(channels, width, extra_blocks=extra)
    return FeatureBackbone(body, channels, fpn, width, spec.timm_levels)


def build_detector(spec: DetectorSpec, backbone: FeatureBackbone) -> nn.Module:
    """The detection model around `backbone`, with anchors sized from its strides (small images: small anchors)."""
    from torchvision.models import detection as det
    from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
    from torchvision.ops import MultiScaleRoIAlign

    classes = spec.num_classes + 1
    common = {"min_size": spec.min_size, "max_size": spec.max_size, "image_mean": spec.image_mean,
              "image_std": spec.image_std}
    ratios = ((0.5, 1.0, 2.0),) * len(spec.strides)
    if spec.detector == "fasterrcnn":
        anchors = AnchorGenerator(tuple((2 * s, 4 * s, 8 * s) for s in spec.strides), ratios)
        pool = MultiScaleRoIAlign([str(i) for i in range(len(spec.strides) - 1)], output_size=7, sampling_ratio=2)
        return det.FasterRCNN(backbone, classes, rpn_anchor_generator=anchors, box_roi_pool=pool,
                             box_batch_size_per_image=spec.roi_samples, **common)
    if spec.detector == "retinanet":
        anchors = AnchorGenerator(tuple(tuple(2 * s * 2 ** (k / 3) for k in range(3)) for s in spec.strides), ratios)
        return det.RetinaNet(backbone, classes, anchor_generator=anchors, **common)
    if spec.detector == "fcos":
        anchors = AnchorGenerator(tuple((s,) for s in spec.strides), ((1.0,),) * len(spec.strides))
        return det.FCOS(backbone, classes, anchor_generator=anchors, **common)
    from torchvision.models.detection.ssdlite import SSDLiteHead

    boxes = DefaultBoxGenerator([[2, 3] for _ in spec.strides], min_ratio=0.2, max_ratio=0.95)
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    head = SSDLiteHead(backbone.out_channels, boxes.num_anchors_per_location(), classes, norm)
    from torchvision.models.detection.ssd import SSD

    return SSD(backbone, boxes, (spec.min_size, spec.min_size), classes, spec.image_mean, spec.image_std,
                   head=head, score_thresh=0.001, detections_per_img=300, topk_candidates=300)


def build_prebuilt(spec: DetectorSpec, state: dict | None, path) -> nn.Module:
    """A torchvision detector by its full name; pre-trained weights load except the class-dependent layers."""
    import torchvision

    kwargs = {} if spec.detector.startswith("ssd") else {"min_size": spec.min_size, "max_size": spec.max_size}
    model = torchvision.models.get_model(spec.detector, weights=None, weights_backbone=None,
                                         num_classes=spec.num_classes + 1, **kwargs)
    if state is not None:
        own = model.state_dict()
        unknown = [k for k in own if k not in state]
        if unknown:
            raise LobellError(f"weights file '{path}' does not fit torchvision/{spec.detector}: missing "
                              f"{', '.join(unknown[:3])} (and {max(len(unknown) - 3, 0)} more)")
        model.load_state_dict({k: v for k, v in state.items() if k in own and v.shape == own[k].shape}, strict=False)
    body = body_prefix(model)
    if spec.frozen_batch_norm and not spec.detector.startswith("ssd"):
        freeze_batch_norm(model.get_submodule(body))
    return model


def body_prefix(model: nn.Module) -> str:
    """Where the pre-trained classification trunk sits in a detector (the rest is neck and heads)."""
    for name in ("backbone.body", "backbone.features"):
        try:
            model.get_submodule(name)
            return name
        except AttributeError:
            continue
    raise LobellError("detector has no backbone.body or backbone.features to map into layer groups")
