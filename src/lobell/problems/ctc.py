"""Speech recognition through a CTC head: transcripts in, characters out, scored by word error rate.

The task name says `speech-recognition`; the problem (and `loss.name`) is `ctc`, everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lobell.data.tables import label_strings
from lobell.transcripts import BLANK, UNKNOWN, WORD_DELIMITER, error_rates, greedy_transcripts, reference_transcripts


def character_vocabulary(transcripts: list[str]) -> list[str]:
    """The CTC vocabulary in id order: blank, unknown, word delimiter, then each character seen, sorted."""
    characters = sorted({c for text in transcripts for c in text} - {" "})
    return [BLANK, UNKNOWN, WORD_DELIMITER, *characters]


@dataclass
class CTC:
    labels: list[str]  # the character vocabulary
    name = "ctc"
    default_loss = "ctc"
    allowed_losses = frozenset({"ctc"})
    default_monitor = "wer"
    hf_problem_type = None  # transformers' config.problem_type: what plain transformers code sees

    stratify = False
    min_classes = 0
    conflicts_matter = True

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    # Targets: transcripts; the labels are the characters they use (the CTC vocabulary).
    @staticmethod
    def read_targets(frame, column: str, path) -> list:
        return label_strings(frame, column, path)

    @staticmethod
    def fit_labels(raw: list, path, column: str) -> list[str]:
        return character_vocabulary(raw)

    def encode(self, raw: list, path, column: str, frame=None) -> np.ndarray:
        return np.asarray(raw, dtype=object)  # the speech adapter turns them into ids

    def target_dtype(self) -> None:
        return None  # transcripts: the speech collator pads their ids itself

    def dummy_targets(self, n: int) -> np.ndarray:
        return np.full(n, "", dtype=object)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return logits

    def metrics(self, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return error_rates(reference_transcripts(targets, self.labels), greedy_transcripts(logits, self.labels))

    def records(self, logits: np.ndarray, targets: np.ndarray) -> list[dict]:
        heard, said = greedy_transcripts(logits, self.labels), reference_transcripts(targets, self.labels)
        return [{"target": s, "prediction": h, "cer": error_rates([s], [h])["cer"]} for s, h in zip(said, heard)]

    def table(self, logits: np.ndarray):
        import pandas as pd

        return pd.DataFrame({"transcript": greedy_transcripts(logits, self.labels)})
