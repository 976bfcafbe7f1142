"""The task registry's names: task -> (modality, problem). Plain data, so the config (and
`lobell --help`, `lobell validate`) can check a task name without importing torch.

tasks.py maps each modality name to its spec (modalities/) and problems/ each problem name to its
class. A new task family is one module plus one line here (docs/development.md).
"""

from __future__ import annotations

TASKS: dict[str, tuple[str, str]] = {
    "text-classification": ("text", "classification"),
    "text-multi-label": ("text", "multi-label"),
    "text-regression": ("text", "regression"),
    "image-classification": ("image", "classification"),
    "image-multi-label": ("image", "multi-label"),
    "image-regression": ("image", "regression"),
    "audio-classification": ("audio", "classification"),
    "audio-multi-label": ("audio", "multi-label"),
    "audio-regression": ("audio", "regression"),
    "speech-recognition": ("speech", "ctc"),  # transcripts through a CTC head
    "object-detection": ("detection", "detection"),  # boxes through a torchvision detector (docs/detection.md)
    "seq2seq": ("seq2seq", "seq2seq"),  # text -> text: T5, BART, Marian (docs/generation.md)
    "causal-lm": ("causal", "causal-lm"),  # decoder-only LMs: GPT-2, Llama, Qwen (docs/generation.md)
    "masked-lm": ("masked-text", "masked-lm"),  # continued pre-training on unlabeled text (docs/masked-lm.md)
}

# problem -> the metrics its `metrics()` returns (plus the loss): what early_stopping.monitor may name.
METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1_macro", "loss"),
    "multi-label": ("accuracy", "f1_micro", "f1_macro", "loss"),
    "regression": ("rmse", "mae", "r2", "pearson", "loss"),
    "ctc": ("wer", "cer", "loss"),  # speech recognition: word/character error rates
    "detection": ("map", "map_50", "map_75", "mar_100"),  # COCO mAP@[.5:.95], mAP@.5, ...; no validation loss
    "seq2seq": ("chrf", "bleu", "rouge1", "rouge2", "rougeL", "token_accuracy", "loss"),  # generated vs references
    "causal-lm": ("loss", "perplexity", "token_accuracy", "exact_match"),  # exact match: prompted data only
    "masked-lm": ("perplexity", "loss"),  # over the masked tokens of the validation texts
}
