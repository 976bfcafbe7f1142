"""Text generation problems: `seq2seq` (translation, summarisation: BLEU, chrF, ROUGE) and `causal-lm`
(perplexity; exact match where the data has prompts with references).

The model's own LM head scores every position; the loss is token cross-entropy over the labelled
positions only (data/generation.py: -100 elsewhere, so prompts, user turns and padding add nothing).
Evaluation collects its own outputs (problems/base.py `CollectsOutputs`): each batch is scored
teacher-forced (loss, token accuracy) and decoded with the run's `generation:` settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

IGNORE = -100


def token_loss(causal: bool):
    """(logits, labels) -> mean cross-entropy over the labelled tokens; causal models predict t+1 from t."""
    import torch.nn.functional as F

    def generation_loss(logits, targets):
        if causal:
            logits, targets = logits[:, :-1], targets[:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE)

    return generation_loss


def token_scores(logits, targets, causal: bool):
    """Per example: summed token loss, labelled tokens, correctly predicted tokens (argmax)."""
    import torch.nn.functional as F

    if causal:
        logits, targets = logits[:, :-1], targets[:, 1:]
    losses = F.cross_entropy(logits.transpose(1, 2).float(), targets, ignore_index=IGNORE, reduction="none")
    labelled = targets != IGNORE
    correct = (logits.argmax(-1) == targets) & labelled
    return losses.sum(1), labelled.sum(1), correct.sum(1)


def text_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacreBLEU, its default tokenisation) and mean ROUGE-1/2/L F1 (rouge-score)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    scores = {"bleu": sacrebleu.corpus_bleu(predictions, [references]).score,
              "chrf": sacrebleu.corpus_chrf(predictions, [references]).score}
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    rouge = [scorer.score(r, p) for p, r in zip(predictions, references)]
    for key in ("rouge1", "rouge2", "rougeL"):
        scores[key] = float(np.mean([r[key].fmeasure for r in rouge])) * 100 if rouge else 0.0
    return scores


@dataclass
class _Generation:
    labels: object = None  # no classes: kept for the Problem contract (make_problem passes them)
    default_loss = "token cross-entropy"
    allowed_losses = frozenset({"token cross-entropy"})
    hf_problem_type = None
    stratify = False
    min_classes = 0
    conflicts_matter = False
    causal = False

    @property
    def num_outputs(self) -> int:
        return 0

    def target_dtype(self) -> None:
        return None

    def dummy_targets(self, n: int) -> np.ndarray:
        return np.full(n, "", dtype=object)

    def probabilities(self, logits):
        return logits

    def loss(self):
        return token_loss(self.causal)

    def collect(self, accelerator, adapter, model, loader, reporter, description: str = "evaluate"):
        """Per example, in dataset order across processes: its teacher-forced token scores and its generated text."""
        import torch

        model.eval()
        rows: list = []
        with torch.inference_mode(), reporter.progress(description, len(loader)) as bar:
            for batch in loader:
                with accelerator.autocast():
                    losses, counts, correct = token_scores(adapter.forward(model, batch), batch["targets"], self.causal)
                    generated = adapter.generate(model, batch) if self.generates(batch) else [""] * len(losses)
                local = [(int(i), float(l), int(n), int(c), g) for i, l, n, c, g in
                         zip(batch["index"], losses, counts, correct, generated)]
                rows += accelerator.gather_for_metrics(local, use_gather_object=True)
                bar.advance()
        rows.sort(key=lambda row: row[0])
        references = loader.dataset.targets if hasattr(loader, "dataset") else None
        references = [str(references[row[0]]) for row in rows] if references is not None else [""] * len(rows)
        return [{"loss_sum": r[1], "tokens": r[2], "correct": r[3], "prediction": r[4]} for r in rows], references

    def generates(self, batch) -> bool:
        return True

    def _token_metrics(self, outputs: list[dict]) -> dict[str, float]:
        tokens = sum(o["tokens"] for o in outputs)
        loss = sum(o["loss_sum"] for o in outputs) / max(tokens, 1)
        return {"loss": loss, "token_accuracy": sum(o["correct"] for o in outputs) / max(tokens, 1)}

    def records(self, outputs: list[dict], targets: list[str]) -> list[dict]:
        """Per example: the reference, the generated text, its token loss; `input` is added by the caller."""
        rows = []
        for output, reference in zip(outputs, targets if targets is not None else [None] * len(outputs)):
            loss = output["loss_sum"] / output["tokens"] if output["tokens"] else None
            rows.append({"target": reference, "prediction": output["prediction"], "loss": loss})
        return rows

    def table(self, outputs: list[dict]):
        import pandas as pd

        return pd.DataFrame({"generated": [o["prediction"] for o in outputs]})


@dataclass
class Seq2Seq(_Generation):
    name = "seq2seq"
    default_monitor = "chrf"  # smoother than BLEU on short outputs: BLEU stays 0 until 4-grams match

    def metrics(self, outputs: list[dict], targets: list[str]) -> dict[str, float]:
        return {**text_scores([o["prediction"] for o in outputs], list(targets)), **self._token_metrics(outputs)}


@dataclass
class CausalLM(_Generation):
    name = "causal-lm"
    default_monitor = "loss"  # perplexity orders runs the same way; exact match only exists for prompted data
    causal = True

    def generates(self, batch) -> bool:
        """Only prompted examples (prompt/completion, chat) are generated: plain text has nothing to complete."""
        return "prompt_mask" in batch and bool((batch["prompt_mask"].sum(1) > 0).all())

    def metrics(self, outputs: list[dict], targets: list[str]) -> dict[str, float]:
        scores = self._token_metrics(outputs)
        scores["perplexity"] = math.exp(min(scores["loss"], 50.0))
        prompted = [(o["prediction"], t) for o, t in zip(outputs, targets) if t]
        scores["exact_match"] = (sum(p.strip() == t.strip() for p, t in prompted) / len(prompted)) if prompted else 0.0
        return scores
