"""Code that loads a run's model with plain transformers / torchvision / timm, chosen by lobell.json's modality."""

from __future__ import annotations

import json
from pathlib import Path

from lobell.report.run_files import RunFiles


def loading_snippet(run: RunFiles) -> str:
    """A fenced Python block (plus a line of prose) that loads `model/` and predicts one input."""
    model_dir = (run.run_dir / "model").resolve()
    if (model_dir / "adapter_config.json").is_file():  # lora.merge: false
        from lobell.report.compression import peft_snippet

        return peft_snippet(model_dir, run.base_model, len(run.labels) or 1)
    if run.modality == "image":
        return image_snippet(model_dir, run.problem)
    if run.modality in ("audio", "speech"):
        from lobell.models.audio import loading_snippet as audio_snippet

        return audio_snippet(model_dir, run.modality, run.problem)
    if run.modality in ("seq2seq", "causal"):
        from lobell.models.generation import loading_snippet as generation_snippet

        return generation_snippet(model_dir, run.modality)
    if run.modality == "masked-text":
        return masked_lm_snippet(model_dir)
    return text_snippet(model_dir, run.problem)


def masked_lm_snippet(model_dir: Path) -> str:
    return ("A plain masked-LM checkpoint: fill a mask, or start a classifier from its encoder "
            "(`AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=N)`, or lobell's "
            "`pretrain:`, docs/masked-lm.md).\n\n```python\nfrom transformers import pipeline\n\n"
            f"model_dir = {str(model_dir)!r}  # this folder\n"
            "fill = pipeline(\"fill-mask\", model=model_dir, tokenizer=model_dir)\n"
            "print(fill(f\"a sentence with one {fill.tokenizer.mask_token} word\"))\n```\n")


RAW_READ_OUT = "print(logits[0].tolist())  # the raw outputs (a problem without its own read-out line here)"


def text_snippet(model_dir: Path, problem: str) -> str:
    """Plain transformers; a model with a `head:` section rebuilds lobell's new head before loading the weights."""
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    spec = config.get("lobell_head")
    if spec:
        head = {"head": spec, "classifier": spec["classifier"], "num_classes": len(config.get("id2label") or [0])}
        build = ("from safetensors.torch import load_file\nfrom torch import nn\n"
                 "from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer\n\n"
                 f"model_dir = {str(model_dir)!r}  # this folder\n"
                 "model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(model_dir))\n"
                 f"{_head_code(head)}"
                 'model.load_state_dict(load_file(f"{model_dir}/model.safetensors"))\nmodel.eval()')
    else:
        build = ("from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
                 f"model_dir = {str(model_dir)!r}  # this folder\n"
                 "model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()")
    read_out = {
        "classification": "print(model.config.id2label[int(logits.argmax())])",
        "multi-label": "print([model.config.id2label[i] for i, p in enumerate(logits.sigmoid()[0]) if p >= 0.5])",
        "regression": "print(float(logits[0, 0]))",
    }.get(problem, RAW_READ_OUT) if not (spec and "tasks" in spec) else task_read_out(spec)
    return f"""With plain transformers (no lobell needed):

```python
import torch
{build}
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
                "regression": "print(float(logits[0, 0]))"}.get(problem, RAW_READ_OUT)
    if "tasks" in (config.get("head") or {}):  # a multi-task model: each task's block of the logits
        read_out = task_read_out(config["head"])
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
    parent, _, child = config["classifier"].rpartition(".")
    owner = f"model.get_submodule({parent!r})" if parent else "model"
    if "tasks" in spec:
        return _task_heads_code(spec, owner, child)
    body = ",\n    ".join(_head_layers(spec, spec["in_features"], config["num_classes"]))
    return f"# lobell's new head, where the pre-trained classifier was:\nsetattr({owner}, {child!r}, nn.Sequential(\n    {body},\n))\n"


def _head_layers(spec: dict, in_features: int, num_outputs: int) -> list[str]:
    activation = {"relu": "nn.ReLU()", "gelu": "nn.GELU()", "silu": "nn.SiLU()", "tanh": "nn.Tanh()"}[spec["activation"]]
    layers, width = [], in_features
    for size in spec["hidden"]:
        layers.append(f"nn.Linear({width}, {size}, bias={not spec['batch_norm']})")
        layers += [f"nn.BatchNorm1d({size})"] if spec["batch_norm"] else []
        layers.append(activation)
        layers += [f"nn.Dropout({spec['dropout']})"] if spec["dropout"] > 0 else []
        width = size
    if not spec["hidden"] and spec["dropout"] > 0:
        layers.append(f"nn.Dropout({spec['dropout']})")
    layers.append(f"nn.Linear({width}, {num_outputs})")
    return layers


_TASK_HEADS_CLASS = '''

class TaskHeads(nn.Module):
    """lobell's heads, one per task, on the pooled features; the logits hold each task's block in turn."""

    def __init__(self, heads):
        super().__init__()
        self.heads = nn.ModuleDict(heads)

    def forward(self, features):
        return torch.cat([head(features) for head in self.heads.values()], dim=1)


'''


def _task_heads_code(spec: dict, owner: str, child: str) -> str:
    """A multi-task model's heads (models/heads.py's MultiTaskHeads): one Sequential per task, side by side."""
    layers = {task["name"]: ", ".join(_head_layers(task, spec["in_features"], task["outputs"])) for task in spec["tasks"]}
    heads = "".join(f"    {name!r}: nn.Sequential({body}),\n" for name, body in layers.items())
    return (f"{_TASK_HEADS_CLASS}# lobell's heads, where the pre-trained classifier was:\n"
            f"setattr({owner}, {child!r}, TaskHeads({{\n{heads}}}))\n")


def task_read_out(spec: dict) -> str:
    """Print each task's answer from its block of a multi-task model's logits."""
    lines, start = [], 0
    for task in spec["tasks"]:
        name, labels, end = task["name"], task["labels"], start + task["outputs"]
        if task["kind"] == "classification":
            lines.append(f"print({name!r}, {labels!r}[int(logits[0, {start}:{end}].argmax())])")
        elif task["kind"] == "multi-label":
            chosen = f"[l for l, p in zip({labels!r}, logits[0, {start}:{end}].sigmoid()) if p >= 0.5]"
            lines.append(f"print({name!r}, {chosen})")
        else:
            lines.append(f"print({name!r}, float(logits[0, {start}]))")
        start = end
    return "\n".join(lines)


def _transform_code(pre: dict) -> str:
    size, resize = pre.get("size", 224), pre.get("resize", 256)
    side = f"({resize}, {resize})" if pre.get("crop_mode") == "squash" else str(resize)
    mean = [round(m, 6) for m in pre.get("mean", (0.485, 0.456, 0.406))]
    std = [round(s, 6) for s in pre.get("std", (0.229, 0.224, 0.225))]
    mode = pre.get("interpolation", "bilinear")
    return (f"transform = v2.Compose([v2.Resize({side}, interpolation=InterpolationMode({mode!r}), antialias=True), "
            f"v2.CenterCrop({size}),\n                       v2.ToImage(), v2.ToDtype(torch.float32, scale=True), "
            f"v2.Normalize({mean}, {std})])")
