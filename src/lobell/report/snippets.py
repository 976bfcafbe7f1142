"""Code that loads a run's model with plain transformers / torchvision / timm, chosen by lobell.json's modality."""

from __future__ import annotations

import json
from pathlib import Path

from lobell.report.run_files import RunFiles


def loading_snippet(run: RunFiles) -> str:
    """A fenced Python block (plus a line of prose) that loads `model/` and predicts one input."""
    model_dir = (run.run_dir / "model").resolve()
    if run.modality == "image":
        return image_snippet(model_dir, run.problem)
    return text_snippet(model_dir, run.problem)


def text_snippet(model_dir: Path, problem: str) -> str:
    read_out = {
        "classification": "print(model.config.id2label[int(logits.argmax())])",
        "multi-label": "print([model.config.id2label[i] for i, p in enumerate(logits.sigmoid()[0]) if p >= 0.5])",
        "regression": "print(float(logits[0, 0]))",
    }[problem]
    return f"""With plain transformers (no lobell needed):

```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model_dir = {str(model_dir)!r}  # this folder
model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
tokenizer = AutoTokenizer.from_pretrained(model_dir)
with torch.no_grad():
    logits = model(**tokenizer(["a gripping, beautifully acted film"], return_tensors="pt", truncation=True)).logits
{read_out}
```
"""


def image_snippet(model_dir: Path, problem: str) -> str:
    """models/vision.py's own snippet when it offers one; else one built from the saved config.json."""
    try:
        from lobell.models import vision

        own = getattr(vision, "loading_snippet", None)
    except ImportError:
        own = None
    if own is not None:
        return own(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    labels = config.get("label_names") or (json.loads((model_dir / "lobell.json").read_text()).get("labels") or [])
    timm = config.get("library") == "timm"
    build = _timm_build if timm else _torchvision_build
    imports = "import timm\nimport torch" if timm else "import torch\nimport torchvision"
    read_out = {"classification": f"labels = {labels!r}\nprint(labels[int(logits.argmax())])",
                "multi-label": f"labels = {labels!r}\nprint([l for l, p in zip(labels, logits.sigmoid()[0]) if p >= 0.5])",
                "regression": "print(float(logits[0, 0]))"}[problem]
    return f"""With plain {config.get('library', 'torchvision')} and safetensors (no lobell needed):

```python
{imports}
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from torchvision.transforms import InterpolationMode, v2

model_dir = {str(model_dir)!r}  # this folder
{build(config)}
{_head_code(config)}model.load_state_dict(load_file(f"{{model_dir}}/model.safetensors"))
model.eval()
{_transform_code(config.get('lobell_preprocessing') or {})}
with torch.no_grad():
    logits = model(transform(Image.open("photo.jpg").convert("RGB")).unsqueeze(0))
{read_out}
```
"""


def _torchvision_build(config: dict) -> str:
    return f"model = torchvision.models.get_model({config['architecture']!r}, weights=None{_model_args(config)})"


def _timm_build(config: dict) -> str:
    return f"model = timm.create_model({config['architecture']!r}, pretrained=False{_model_args(config)})"


def _model_args(config: dict) -> str:
    """The saved model_args with num_classes last (timm's config.json repeats it there)."""
    args = {**(config.get("model_args") or {}), "num_classes": config["num_classes"]}
    return "".join(f", {key}={value!r}" for key, value in args.items())


def _head_code(config: dict) -> str:
    """The new head lobell put at `classifier`, rebuilt layer by layer (heads.build_head's order)."""
    spec = config.get("head")
    if not spec:
        return ""
    activation = {"relu": "nn.ReLU()", "gelu": "nn.GELU()", "silu": "nn.SiLU()", "tanh": "nn.Tanh()"}[spec["activation"]]
    layers, width = [], spec["in_features"]
    for size in spec["hidden"]:
        layers.append(f"nn.Linear({width}, {size}, bias={not spec['batch_norm']})")
        layers += [f"nn.BatchNorm1d({size})"] if spec["batch_norm"] else []
        layers.append(activation)
        layers += [f"nn.Dropout({spec['dropout']})"] if spec["dropout"] > 0 else []
        width = size
    if not spec["hidden"] and spec["dropout"] > 0:
        layers.append(f"nn.Dropout({spec['dropout']})")
    layers.append(f"nn.Linear({width}, {config['num_classes']})")
    parent, _, child = config["classifier"].rpartition(".")
    owner = f"model.get_submodule({parent!r})" if parent else "model"
    body = ",\n    ".join(layers)
    return f"# lobell's new head, where the pre-trained classifier was:\nsetattr({owner}, {child!r}, nn.Sequential(\n    {body},\n))\n"


def _transform_code(pre: dict) -> str:
    size, resize = pre.get("size", 224), pre.get("resize", 256)
    side = f"({resize}, {resize})" if pre.get("crop_mode") == "squash" else str(resize)
    mean = [round(m, 6) for m in pre.get("mean", (0.485, 0.456, 0.406))]
    std = [round(s, 6) for s in pre.get("std", (0.229, 0.224, 0.225))]
    mode = pre.get("interpolation", "bilinear")
    return (f"transform = v2.Compose([v2.Resize({side}, interpolation=InterpolationMode({mode!r}), antialias=True), "
            f"v2.CenterCrop({size}),\n                       v2.ToImage(), v2.ToDtype(torch.float32, scale=True), "
            f"v2.Normalize({mean}, {std})])")
