"""Masked language modelling: the encoder predicts masked tokens; scored by perplexity (early stopping's default).

The model's outputs are token logits (batch x tokens x vocabulary), far too large to gather for a
whole split, so the problem collects them itself (problems/base.py: `CollectsOutputs`): per text,
the summed cross-entropy over its masked tokens and how many there were. Perplexity is
exp(total loss / total masked tokens), the way BERT-style papers report it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

IGNORE = -100  # labels of tokens that were not masked (transformers' convention)


@dataclass
class MaskedLM:
    labels: None = None
    name = "masked-lm"
    default_loss = "masked-lm"  # cross-entropy over the masked tokens only
    allowed_losses = frozenset({"masked-lm"})
    default_monitor = "perplexity"
    hf_problem_type = None

    stratify = False
    min_classes = 0
    conflicts_matter = False

    @property
    def num_outputs(self) -> int:
        return 0  # the vocabulary: the model's own output layer

    def target_dtype(self) -> None:
        return None  # the collator masks and builds the token labels itself

    def dummy_targets(self, n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.int64)

    def loss(self):
        """(token logits, token labels) -> mean cross-entropy over the masked tokens."""
        import torch.nn.functional as F

        def masked_lm_loss(logits, labels):
            return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                   ignore_index=IGNORE)

        return masked_lm_loss

    def collect(self, accelerator, adapter, model, loader, reporter, description: str = "evaluate"):
        """Per text, [summed masked-token loss, masked tokens], over all processes, in dataset order."""
        import torch
        import torch.nn.functional as F

        model.eval()
        rows, indices = [], []
        with torch.inference_mode(), reporter.progress(description, len(loader)) as bar:
            for batch in loader:
                logits, labels = adapter.forward(model, batch).float(), batch["targets"]
                losses = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
                per_text = torch.stack([losses.sum(dim=1), (labels != IGNORE).sum(dim=1).float()], dim=1)
                gathered = accelerator.gather_for_metrics((per_text, batch["index"]))
                rows.append(gathered[0].cpu())
                indices.append(gathered[1].cpu())
                bar.advance()
        order = np.argsort(torch.cat(indices).numpy(), kind="stable")
        outputs = torch.cat(rows).numpy()[order]
        return outputs, outputs[:, 1]

    def metrics(self, outputs: np.ndarray, targets) -> dict[str, float]:
        tokens = float(outputs[:, 1].sum())
        loss = float(outputs[:, 0].sum()) / max(tokens, 1.0)
        return {"perplexity": math.exp(min(loss, 50.0)), "loss": loss, "masked_tokens": tokens}

    def records(self, outputs: np.ndarray, targets) -> list[dict]:
        return [{"masked_tokens": int(n), "loss": float(s / n) if n else None} for s, n in outputs]

    def table(self, outputs: np.ndarray):
        import pandas as pd

        return pd.DataFrame(self.records(outputs, None))
