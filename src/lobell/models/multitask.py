"""Several heads on one backbone: the text or image adapter with one head per task.

The backbone's pooled features (what its output layer used to read) feed one head per task. The
heads sit where the output layer was, inside the same text or image adapter, and return their
logits side by side, one block per task (data/multitask.py's `TaskHeads` knows the layout). So the
runner, freeze plans, checkpoints and save/load see one model whose head group holds every head.
The heads module is models/heads.py's `MultiTaskHeads`; the weighted loss, per-task metrics and
outputs are the multi-task problem (problems/multitask.py).
"""

from __future__ import annotations

from lobell.config import Config
from lobell.data.multitask import TaskHeads
from lobell.errors import LobellError
from lobell.models.heads import MultiTaskHeads  # noqa: F401 (re-exported: saved models' code imports it here)


def head_section(cfg: Config, heads: TaskHeads) -> dict:
    """The adapters' `head` argument for these tasks: each head gets the `head:` section's layers
    (none by default: one new Linear per task)."""
    layers = cfg.head.model_dump() if cfg.head is not None else {"hidden": [], "dropout": 0.0,
                                                                   "batch_norm": False, "activation": "relu"}
    return {"tasks": [{**task.to_dict(), **layers} for task in heads.tasks]}


def build_multitask_adapter(cfg: Config, modality: str, labels, weights: bool = True):
    """The text or image adapter of `cfg.model` with one head per task where its output layer was."""
    if modality not in ("text", "image"):
        raise LobellError(f"tasks: several heads work on text and image models, not task={cfg.task}")
    heads = labels if isinstance(labels, TaskHeads) else TaskHeads.from_config(cfg)  # no data: a skeleton
    head = head_section(cfg, heads)
    if modality == "text":
        from lobell.models.text import TextAdapter

        adapter = TextAdapter.from_pretrained(cfg.model, heads.logit_width, "classification", heads.output_names(),
                                              weights=weights, head=head)
        adapter.model.config.problem_type = None  # no single problem: MultiTaskLoss scores each block
        return adapter
    from lobell.models.vision import VisionAdapter

    return VisionAdapter.from_pretrained(cfg.model, heads.logit_width, weights=cfg.model_weights, head=head,
                                         image_size=cfg.data.image_size, load_weights=weights)


# The loss, metrics and outputs of a multi-task run live with the other problems (problems/multitask.py).
from lobell.problems.multitask import MultiTaskLoss, task_metrics, task_table  # noqa: E402,F401
