"""LoRA through `peft`: low-rank adapters on a backbone's linear layers; only they and the new head train.

`apply_lora` wraps an adapter's model in place and gives it a layer map whose first group holds every
frozen pre-trained weight, then one group of adapters per original layer group, then the head (saved
through peft's `modules_to_save`, so the trained head travels with the adapters). `LoraRun.finish`
merges the adapters into plain weights before `adapter.save`, unless `lora.merge: false` keeps them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from lobell.config import LoraConfig
from lobell.errors import LobellError
from lobell.registry import TASKS
from lobell.strategies.layer_map import LayerGroup, LayerMap

# Group 0 of a LoRA layer map: the pre-trained weights, frozen for the whole run (plans.build_plan).
FROZEN_GROUP = "pre-trained weights (frozen under LoRA)"
_PEFT_PREFIX = "base_model.model."
BYTES_PER_PARAM = 4  # fp32 master weights, gradients and optimizer moments (mixed precision keeps fp32 too)
_OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "sgd": 1, "rmsprop": 1}  # moments kept per trained parameter


@dataclass
class LoraSummary:
    """What lora.json records: the adapters and the trainable share / memory against full fine-tuning."""

    r: int
    alpha: float
    dropout: float
    target_modules: list[str]
    adapted_layers: int
    merged: bool
    trainable_params: int  # LoRA adapters + the new head
    base_params: int  # the model as full fine-tuning would train it
    trainable_share: float
    training_state_mb: float  # weights + gradients + optimizer moments (activations not counted)
    full_training_state_mb: float


@dataclass
class LoraRun:
    """A model wrapped with LoRA: what `finish` needs to hand back a plain model at the end."""

    config: LoraConfig
    base_layer_map: LayerMap
    summary: LoraSummary
    head_modules: list[str] = field(default_factory=list)

    def finish(self, adapter, run_dir: Path | None = None) -> None:
        """Merge the adapters into the weights (lora.merge: true) so `adapter.save` writes a plain model;
        with merge: false the model stays a PeftModel, whose save_pretrained writes an adapter folder.
        Writes lora.json into `run_dir` when given."""
        if run_dir is not None:
            from lobell.run_dir import atomic_write_json

            atomic_write_json(Path(run_dir) / "lora.json", asdict(self.summary))
        if self.config.merge:
            adapter.model = adapter.model.merge_and_unload()
            adapter.layer_map = self.base_layer_map


def apply_lora(adapter, cfg: LoraConfig, optimizer: str = "adamw", log=None) -> LoraRun:
    """Wrap `adapter.model` with LoRA adapters (in place) and give the adapter the LoRA layer map.

    Raises:
        LobellError: lora.target_modules names no layer, or a layer that is not linear (convolutions
            are not adapted), or the model has no linear layer to adapt.
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    model, base_map = adapter.model, adapter.layer_map
    head_modules = head_module_names(model, set(base_map.groups[-1].param_names))
    targets = cfg.target_modules or default_targets(model, head_modules, getattr(adapter, "name", "the model"))
    adapted = check_targets(model, targets, head_modules, getattr(adapter, "name", "the model"))
    base_params = sum(p.numel() for p in model.parameters())
    peft_config = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(targets),
                                 modules_to_save=head_modules)
    with warnings.catch_warnings():  # transformers' deprecation notice from inside peft: not the user's concern
        warnings.simplefilter("ignore", FutureWarning)
        adapter.model = get_peft_model(model, peft_config)
    _check_saved_modules(adapter.model, head_modules)
    adapter.layer_map = lora_layer_map(adapter.model, base_map)
    summary = _summary(cfg, targets, len(adapted), adapter.model, base_params, optimizer)
    if log is not None:
        log(describe(summary))
    return LoraRun(cfg, base_map, summary, head_modules)


def head_module_names(model: nn.Module, head_params: set[str]) -> list[str]:
    """The outermost modules whose parameters all belong to the new head (BERT: `classifier`)."""
    chosen: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(c + ".") for c in chosen):
            continue
        names = [f"{name}.{n}" for n, _ in module.named_parameters()]
        if names and all(n in head_params for n in names):
            chosen.append(name)
    return chosen


def default_targets(model: nn.Module, head_modules: list[str], name: str) -> list[str]:
    """peft's choice for the transformers family (BERT-like: query, value); a ViT's fused `qkv`;
    else every linear layer outside the head. A model without linear layers (a CNN) is refused."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as BY_FAMILY

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in BY_FAMILY:
        return list(BY_FAMILY[model_type])
    linear = {n: m for n, m in _backbone_modules(model, head_modules) if _is_linear(m)}
    if not linear:
        raise LobellError(f"strategy=lora adapts linear layers and model '{name}' has none outside its head (a "
                          f"CNN's layers are convolutions); use strategy=full or feature-extraction with it")
    if any(n.rpartition(".")[2] == "qkv" for n in linear):
        return ["qkv"]
    short = sorted({n.rpartition(".")[2] for n in linear})
    if all(_is_linear(m) for n, m in _backbone_modules(model, head_modules) if n.rpartition(".")[2] in short):
        return short
    return sorted(linear)  # full paths: a short name would also hit a layer that is not linear


def check_targets(model: nn.Module, targets: list[str], head_modules: list[str], name: str) -> list[str]:
    """The layers `targets` select (peft's rule: the name itself or a `.name` suffix), each checked."""
    modules = _backbone_modules(model, head_modules)
    selected = []
    for target in targets:
        hits = [(n, m) for n, m in modules if n == target or n.endswith("." + target)]
        if not hits:
            examples = ", ".join(sorted({n.rpartition(".")[2] for n, m in modules if _is_linear(m)})[:8])
            raise LobellError(f"lora.target_modules={target!r} matches no layer of model '{name}' outside its head; "
                              f"its linear layers are named {examples or '(none)'}")
        wrong = [(n, m) for n, m in hits if not _is_linear(m)]
        if wrong:
            kind = "a convolution" if isinstance(wrong[0][1], nn.modules.conv._ConvNd) else type(wrong[0][1]).__name__
            raise LobellError(f"lora.target_modules={target!r} selects '{wrong[0][0]}', {kind}; lobell puts LoRA "
                              f"adapters on linear layers only")
        selected += [n for n, _ in hits]
    return selected


def lora_layer_map(model: nn.Module, base_map: LayerMap) -> LayerMap:
    """Frozen pre-trained weights first, then the adapters grouped like the layers they adapt, head last."""
    group_of = base_map.group_of()
    adapters: dict[int, list[str]] = {}
    frozen, head = [], []
    for name, param in model.named_parameters():
        if ".lora_" in name:
            layer = name.removeprefix(_PEFT_PREFIX).split(".lora_")[0]
            adapters.setdefault(group_of.get(layer + ".weight", 0), []).append(name)
        elif param.requires_grad:  # peft's trainable copy of the head (modules_to_save)
            head.append(name)
        else:
            frozen.append(name)
    groups = [LayerGroup(FROZEN_GROUP, frozen)]
    groups += [LayerGroup(f"lora {base_map.groups[i].name}", adapters[i]) for i in sorted(adapters)]
    groups.append(LayerGroup("head", head, is_head=True))
    return LayerMap(groups, base_map.source + "; LoRA adapters grouped by the layers they adapt")


def describe(summary: LoraSummary) -> str:
    """The run's log line: what was adapted, the trainable share, the memory against full fine-tuning."""
    state = "merged into the weights at the end" if summary.merged else "kept as a peft adapter folder"
    return (f"LoRA r={summary.r} alpha={summary.alpha:g} on {summary.adapted_layers} layers "
            f"({', '.join(summary.target_modules[:4])}{' ...' if len(summary.target_modules) > 4 else ''}); "
            f"{summary.trainable_params:,} of {summary.base_params:,} parameters train "
            f"({summary.trainable_share:.2%}); weights + gradients + optimizer state ~{summary.training_state_mb:.1f} MB "
            f"vs {summary.full_training_state_mb:.1f} MB for full fine-tuning (activations not counted); {state}")


def load_unmerged(model_dir: Path, modality: str):
    """A `model/` folder saved with lora.merge: false: rebuild the base model with its new head, load
    the adapters (and the trained head) with peft, and merge them in memory for prediction."""
    from peft import PeftModel

    from lobell.problems import make_problem

    if modality != "text":
        raise LobellError(f"model folder '{model_dir}' holds LoRA adapters for a {modality} model; lobell keeps "
                          f"adapters unmerged for text models only")
    from lobell.models.text import TextAdapter

    info = json.loads((Path(model_dir) / "lobell.json").read_text())
    problem = TASKS[info["task"]][1]
    labels = info.get("labels")
    spec = info.get("head")
    head = {k: spec[k] for k in ("hidden", "dropout", "batch_norm", "activation")} if spec else None
    adapter = TextAdapter.from_pretrained(info["base_model"], make_problem(problem, labels).num_outputs, problem, labels, head=head)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        adapter.model = PeftModel.from_pretrained(adapter.model, str(model_dir)).merge_and_unload().eval()
    return adapter


def _summary(cfg: LoraConfig, targets: list[str], adapted: int, model: nn.Module, base_params: int,
             optimizer: str) -> LoraSummary:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stored = sum(p.numel() for p in model.parameters())  # base + adapters + peft's copy of the head
    per_trained = 1 + _OPTIMIZER_STATES.get(optimizer, 2)  # gradient + moments
    megabytes = BYTES_PER_PARAM / 2**20
    return LoraSummary(cfg.r, cfg.alpha, cfg.dropout, list(targets), adapted, cfg.merge, trainable, base_params,
                       trainable / base_params, (stored + per_trained * trainable) * megabytes,
                       (1 + per_trained) * base_params * megabytes)


def _backbone_modules(model: nn.Module, head_modules: list[str]) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if n and not any(n == h or n.startswith(h + ".") for h in head_modules)]


def _is_linear(module: nn.Module) -> bool:
    """nn.Linear, or transformers' GPT-2-style Conv1D (a linear layer despite its name); peft adapts both."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _check_saved_modules(model: nn.Module, head_modules: list[str]) -> None:
    """peft matches modules_to_save by name suffix: make sure it wrapped the head and nothing else."""
    from peft.utils import ModulesToSaveWrapper

    wrapped = {n.removeprefix(_PEFT_PREFIX) for n, m in model.named_modules() if isinstance(m, ModulesToSaveWrapper)}
    if wrapped != set(head_modules):
        raise LobellError(f"peft saved modules {sorted(wrapped)} with the adapters but the new head is "
                          f"{head_modules}; name the LoRA layers with lora.target_modules or use strategy=full")
