"""New heads (the L of LO-BELL): hidden layers between a backbone's features and the output.

A head is a plain `nn.Sequential` of Linear / BatchNorm1d / activation / Dropout, so a saved model
reloads with plain PyTorch: rebuild the same Sequential (its spec is saved with the model), put it
where the old output layer was, and load the state dict.
"""

from __future__ import annotations

import torch
from torch import nn

from lobell.errors import LobellError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def build_head(in_features: int, num_outputs: int, hidden: list[int], dropout: float = 0.0,
               batch_norm: bool = False, activation: str = "relu") -> nn.Sequential:
    """Linear -> [BatchNorm1d] -> activation -> [Dropout] per hidden width, then the output Linear.

    Without hidden layers the head is [Dropout ->] Linear. A Linear followed by batch norm has no
    bias (the norm's shift replaces it).
    """
    if activation not in ACTIVATIONS:
        raise LobellError(f"head.activation={activation!r} is not one of {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers.append(nn.Linear(width, size, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    if not hidden and dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


def head_spec(in_features: int, hidden: list[int], dropout: float, batch_norm: bool, activation: str) -> dict:
    """What `build_head` needs besides the output size: saved with the model to rebuild the head."""
    return {"in_features": in_features, "hidden": list(hidden), "dropout": dropout, "batch_norm": batch_norm,
            "activation": activation}


def spec_for(in_features: int, head: dict) -> dict:
    """The saved spec of a `head:` section's keyword arguments, or of several task heads (`{"tasks": [...]}`,
    see models/multitask.py)."""
    if "tasks" in head:
        return {"in_features": in_features, "tasks": [dict(task) for task in head["tasks"]]}
    return head_spec(in_features, **head)


def head_from_spec(spec: dict, num_outputs: int) -> nn.Module:
    """The head a spec describes: a Sequential, or one per task side by side (a multi-task spec)."""
    if "tasks" in spec:
        return MultiTaskHeads.from_spec(spec, num_outputs)
    return build_head(spec["in_features"], num_outputs, spec["hidden"], spec["dropout"], spec["batch_norm"],
                      spec["activation"])


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at dotted `name` (e.g. 'classifier.1'), replacing what was there."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def last_linear(model: nn.Module, roots: tuple[str, ...]) -> str | None:
    """The dotted name of the last nn.Linear under any of `roots` (a backbone's output layer)."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(name == r or name.startswith(r + ".") for r in roots):
            found = name
    return found


class MultiTaskHeads(nn.Module):
    """One `heads.build_head` Sequential per task, in task order; forward returns their logits side by side."""

    def __init__(self, heads: dict[str, nn.Module]):
        super().__init__()
        self.heads = nn.ModuleDict()
        for name, head in heads.items():
            if hasattr(self.heads, name):  # nn.ModuleDict would refuse it with a KeyError
                raise LobellError(f"tasks: the name {name!r} is reserved by PyTorch modules; rename that task")
            self.heads[name] = head
        self.out_features = sum(head[-1].out_features for head in self.heads.values())

    @classmethod
    def from_spec(cls, spec: dict, num_outputs: int | None = None) -> MultiTaskHeads:
        """Built from a multi-task spec (heads.spec_for): `in_features` and per task its outputs and layers."""
        heads = {task["name"]: build_head(spec["in_features"], task["outputs"], task["hidden"], task["dropout"],
                                          task["batch_norm"], task["activation"]) for task in spec["tasks"]}
        module = cls(heads)
        if num_outputs is not None and module.out_features != num_outputs:
            raise LobellError(f"the saved heads give {module.out_features} outputs but the model expects {num_outputs}")
        return module

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(features) for head in self.heads.values()], dim=1)
