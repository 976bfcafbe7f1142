"""timm and torchvision image backbones with a new head, their own preprocessing and a layer map."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lobell.data.image import Preprocessing, resize_for
from lobell.errors import LobellError, nearest
from lobell.models.heads import head_from_spec, last_linear, set_submodule, spec_for
from lobell.models.hub import find_weights, read_state_dict
from lobell.strategies.layer_map import LayerMap, build_layer_map, layer_map_from_assignment

# torchvision classifiers keep their output layer under one of these attributes.
TORCHVISION_HEAD_ROOTS = ("fc", "classifier", "heads", "head")
LIBRARIES = ("torchvision", "timm")


def resolve_name(name: str) -> tuple[str, str]:
    """`torchvision/<arch>`, `timm/<arch>[.tag]` or a bare name -> (library, architecture).

    A bare name is torchvision's when torchvision has it, else timm's.
    """
    library, sep, arch = name.partition("/")
    if not sep:
        if not (arch_exists("torchvision", name) or arch_exists("timm", name)):
            choices = known_archs("torchvision") + known_archs("timm")
            raise LobellError(f"model '{name}' is neither a torchvision nor a timm architecture"
                              f"{nearest(name, choices)}")
        library, arch = ("torchvision" if arch_exists("torchvision", name) else "timm"), name
    if library not in LIBRARIES:
        raise LobellError(f"model '{name}' names library '{library}'; image models are torchvision/<arch> or "
                          f"timm/<arch>")
    if not arch_exists(library, arch):
        hint = nearest(arch, known_archs(library))
        raise LobellError(f"model '{name}': {library} has no architecture '{arch}'{hint}")
    return library, arch


def known_archs(library: str) -> list[str]:
    if library == "torchvision":
        import torchvision

        return torchvision.models.list_models(module=torchvision.models)
    import timm

    return timm.list_models()


def arch_exists(library: str, arch: str) -> bool:
    if library == "torchvision":
        return arch in known_archs("torchvision")
    import timm

    return timm.is_model(arch.partition(".")[0])


class VisionAdapter:
    """An image classifier/regressor: backbone plus new head, preprocessing, layer map."""

    modality = "image"

    def __init__(self, model: nn.Module, library: str, arch: str, name: str, classifier: str,
                 preprocessing: Preprocessing, head: dict | None = None, model_args: dict | None = None):
        self.model = model
        self.library, self.arch, self.name = library, arch, name
        self.classifier = classifier  # dotted name of the new output layer (or head)
        self.preprocessing = preprocessing
        self.head = head  # the head spec, or None: the backbone's own head shape
        self.model_args = model_args or {}
        self.layer_map: LayerMap = vision_layer_map(model, library, arch, classifier)

    @classmethod
    def from_pretrained(cls, name: str, num_outputs: int, *, weights: str | None = None, head: dict | None = None,
                        image_size: int | None = None, load_weights: bool = True) -> VisionAdapter:
        """Build `name` with pre-trained weights and a new head of `num_outputs` outputs.

        Args:
            name: `torchvision/<arch>`, `timm/<arch>` or a bare architecture name.
            weights: None for the weights the name stands for, a local file or folder, or `random`.
            head: keyword arguments of `build_head` besides the sizes, or None for a single new
                output layer in place of the old one.
            image_size: input side that overrides the model's pretrained size.
            load_weights: False builds the structure only (`lobell validate`, `lobell layers`).
        """
        library, arch = resolve_name(name)
        load = load_weights and weights != "random"
        path = find_weights(library, arch, name, weights) if load else None
        state = read_state_dict(path) if path is not None else None
        builder = _build_timm if library == "timm" else _build_torchvision
        model, classifier, preprocessing, model_args = builder(arch, num_outputs, state, path, image_size)
        spec = None
        if head is not None:
            in_features = model.get_submodule(classifier).in_features
            spec = spec_for(in_features, head)  # a `head:` section, or one head per task (models/multitask.py)
            set_submodule(model, classifier, head_from_spec(spec, num_outputs))
        return cls(model, library, arch, f"{library}/{arch}", classifier, preprocessing, spec, model_args)

    @classmethod
    def load(cls, directory: Path) -> VisionAdapter:
        """Reload a saved `model/` folder (see docs/vision.md for the same in plain timm/torchvision)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config = json.loads((directory / "config.json").read_text())
        library = config.get("library", "timm")
        arch = config["architecture"]
        num_classes = config["num_classes"]
        if library == "timm":
            import timm

            model_args = {**config.get("model_args", {}), "num_classes": num_classes}
            model = timm.create_model(arch, pretrained=False, **model_args)
        else:
            import torchvision

            model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes,
                                                 **config.get("model_args", {}))
        if config.get("head"):
            set_submodule(model, config["classifier"], head_from_spec(config["head"], num_classes))
        model.load_state_dict(load_file(directory / "model.safetensors"))
        info_path = directory / "lobell.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        preprocessing = Preprocessing.from_dict(config["lobell_preprocessing"])
        return cls(model, library, arch, info.get("base_model", str(directory)), config["classifier"], preprocessing,
                   config.get("head"), config.get("model_args"))

    @property
    def num_outputs(self) -> int:
        output = self.model.get_submodule(self.classifier)
        return output[-1].out_features if isinstance(output, nn.Sequential) else output.out_features

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["pixel_values"])

    def forward_features(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The pooled features the head reads, one vector per example (computed in eval mode: feature cache).

        timm: its own `forward_head(pre_logits=True)`; torchvision: the input of the top-level
        module that holds the output layer (`fc`, `classifier`, `heads`: its dropout stays in the head).
        """
        if self.library == "timm":
            return model.forward_head(model.forward_features(batch["pixel_values"]), pre_logits=True)
        captured = []
        head = model.get_submodule(self._head_root())
        hook = head.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        try:
            model(batch["pixel_values"])
        finally:
            hook.remove()
        return captured[0]

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        """Logits from `forward_features`' output; timm's pre-logits dropout (`drop_rate`) applies here in training."""
        if self.library == "timm":
            features = nn.functional.dropout(features, getattr(model, "drop_rate", 0.0), model.training)
            return model.get_submodule(self.classifier)(features)
        return model.get_submodule(self._head_root())(features)

    def _head_root(self) -> str:
        return self.classifier.partition(".")[0]

    def save(self, directory: Path, extra: dict | None = None) -> None:
        """model.safetensors + config.json (timm's own format for timm models) + lobell.json."""
        directory = Path(directory)
        extra = extra or {}
        info = {"library": self.library, "classifier": self.classifier, "head": self.head,
                "lobell_preprocessing": self.preprocessing.to_dict()}
        if extra.get("labels"):
            info["label_names"] = list(extra["labels"])
        if self.library == "timm":
            from timm.models import save_for_hf

            save_for_hf(self.model, str(directory), model_config=info, model_args=self.model_args or None,
                        safe_serialization=True, data_config=self._timm_data_config())
        else:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, directory / "model.safetensors")
            config = {"architecture": self.arch, "num_classes": self.num_outputs, "model_args": self.model_args, **info}
            (directory / "config.json").write_text(json.dumps(config, indent=2))
        (directory / "lobell.json").write_text(json.dumps({"modality": "image", "base_model": self.name,
                                                           "library": self.library, **extra}, indent=2))

    def _timm_data_config(self) -> dict:
        """timm's preprocessing keys; crop_pct is chosen so that timm's floor(size / crop_pct) == resize."""
        p = self.preprocessing
        crop_pct = p.size / p.resize if resize_for(p.size, p.size / p.resize) == p.resize else p.size / (p.resize + 0.5)
        return {"input_size": (3, p.size, p.size), "crop_pct": crop_pct, "interpolation": p.interpolation,
                "mean": tuple(p.mean), "std": tuple(p.std), "crop_mode": p.crop_mode}


def _build_timm(arch: str, num_outputs: int, state: dict | None, path: Path | None, image_size: int | None):
    """A timm model without its classifier (num_classes=0), pre-trained weights loaded by timm itself
    (so its checkpoint filters run, e.g. resampling a ViT's position embedding to `image_size`)."""
    import timm

    pretrained_cfg = timm.models.get_pretrained_cfg(arch)
    kwargs = {}
    if image_size and pretrained_cfg is not None and pretrained_cfg.fixed_input_size:
        kwargs["img_size"] = image_size
    if state is None:
        model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    else:
        classifiers = pretrained_cfg.classifier if pretrained_cfg else None
        classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers or ())
        backbone = {k: v for k, v in state.items() if not _under(k, classifiers)}
        overlay = {"state_dict": backbone, "num_classes": 0, "label_offset": 0}
        try:
            model = timm.create_model(arch, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay, **kwargs)
        except (RuntimeError, KeyError) as exc:
            skeleton = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
            raise LobellError(_mismatch(skeleton, backbone, (), path, f"timm/{arch}", exc)) from None
        model.pretrained_cfg.pop("state_dict", None)  # timm keeps the overlay: drop the second copy of the weights
    if isinstance(model.get_classifier(), tuple):
        raise LobellError(f"model 'timm/{arch}' has two output heads (a distilled model); pick its "
                          f"non-distilled variant")
    model.reset_classifier(num_outputs)
    classifier = next(n for n, m in model.named_modules() if m is model.get_classifier())
    data = timm.data.resolve_data_config({}, model=model)
    size = image_size or data["input_size"][-1]
    preprocessing = Preprocessing(size, resize_for(size, data["crop_pct"]), data["interpolation"], tuple(data["mean"]),
                                  tuple(data["std"]), data.get("crop_mode", "center"))
    return model, classifier, preprocessing, dict(kwargs)


def _build_torchvision(arch: str, num_outputs: int, state: dict | None, path: Path | None, image_size: int | None):
    import torchvision

    kwargs = {"image_size": image_size} if image_size and arch.startswith("vit_") else {}
    model = torchvision.models.get_model(arch, weights=None, **kwargs)
    classifier = last_linear(model, TORCHVISION_HEAD_ROOTS)
    if classifier is None:
        raise LobellError(f"model 'torchvision/{arch}' has no linear output layer for lobell to replace")
    if state is not None:
        if "image_size" in kwargs:
            from torchvision.models.vision_transformer import interpolate_embeddings

            state = interpolate_embeddings(image_size, model.patch_size, state)
        problem = _mismatch(model, state, (classifier,), path, f"torchvision/{arch}")
        if problem:
            raise LobellError(problem)
        model.load_state_dict({k: v for k, v in state.items() if not _under(k, (classifier,))}, strict=False)
    set_submodule(model, classifier, nn.Linear(model.get_submodule(classifier).in_features, num_outputs))
    return model, classifier, torchvision_preprocessing(arch, path, image_size), kwargs


def torchvision_preprocessing(arch: str, path: Path | None, image_size: int | None) -> Preprocessing:
    """The transforms meta of the weights a file holds (matched by file name), else the default weights'."""
    from torchvision.models import get_model_weights

    try:
        weights_enum = get_model_weights(arch)
    except (ValueError, KeyError):
        size = image_size or 224
        return Preprocessing(size, resize_for(size, 0.875))
    by_file = {Path(w.url).name: w for w in weights_enum}
    weights = by_file.get(path.name) if path is not None else None
    transforms = (weights or weights_enum.DEFAULT).transforms()
    crop, resize = transforms.crop_size[0], transforms.resize_size[0]
    size = image_size or crop
    return Preprocessing(size, resize * size // crop, transforms.interpolation.value, tuple(transforms.mean),
                         tuple(transforms.std))


def vision_layer_map(model: nn.Module, library: str, arch: str, classifier: str) -> LayerMap:
    """timm: the model's own `group_matcher` (stem, each block); torchvision: the generic layer map."""
    if library == "timm" and hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        try:
            grouping = group_parameters(model, model.group_matcher(coarse=False))
        except NotImplementedError:
            grouping = None
        if grouping:
            assignment = {name: gid for gid, names in grouping.items() for name in names}
            return layer_map_from_assignment(model, assignment, [classifier],
                                             source=f"timm {arch} group_matcher: stem, each block, new head")
    return build_layer_map(model, [classifier], source=f"{library} {arch}: stem, each stage or block, new head")


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _mismatch(model: nn.Module, state: dict, skip: tuple[str, ...], path: Path | None, name: str,
              exc: Exception | None = None) -> str:
    """One sentence naming the first keys where a weights file and the architecture disagree ('' if none)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not _under(k, skip)}
    given = {k: tuple(v.shape) for k, v in state.items() if not _under(k, skip)}
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {given[k]} in the file vs {expected[k]} in the model" for k in expected
              if k in given and given[k] != expected[k]]
    parts = [f"{label} {', '.join(keys[:3])}{f' (and {len(keys) - 3} more)' if len(keys) > 3 else ''}"
             for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape of", shapes)) if keys]
    if not parts and exc is None:
        return ""
    detail = "; ".join(parts) if parts else str(exc).strip().splitlines()[0]
    return f"weights file '{path}' does not fit {name}: {detail}"
