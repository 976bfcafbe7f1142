"""CTC transcripts: greedy decoding of frame outputs, and word/character error rates (numpy only)."""

from __future__ import annotations

import numpy as np

BLANK, UNKNOWN, WORD_DELIMITER = "<pad>", "<unk>", "|"  # transformers' Wav2Vec2CTCTokenizer conventions


def greedy_transcripts(outputs: np.ndarray, vocabulary: list[str]) -> list[str]:
    """The best character per frame, repeats merged, blanks dropped, `|` read as a space.

    `outputs`: (clips, frames, vocabulary + 1) as SpeechAdapter.forward gives them; the last channel
    is 1 for a frame of audio and 0 for padding. Matches Wav2Vec2CTCTokenizer.batch_decode.
    """
    best = outputs[..., :-1].argmax(axis=-1)
    real = outputs[..., -1] > 0.5
    return [_collapse(row[mask], vocabulary) for row, mask in zip(best, real)]


def _collapse(ids: np.ndarray, vocabulary: list[str]) -> str:
    if ids.size == 0:
        return ""
    keep = np.concatenate([[True], ids[1:] != ids[:-1]])
    tokens = [vocabulary[i] for i in ids[keep] if vocabulary[i] != BLANK]
    return "".join(" " if t == WORD_DELIMITER else t for t in tokens).strip()


def reference_transcripts(targets: np.ndarray, vocabulary: list[str]) -> list[str]:
    """Transcripts from padded token ids (-100 = padding), or the strings themselves."""
    if targets.dtype == object:
        return [str(t) for t in targets]
    return ["".join(" " if vocabulary[i] == WORD_DELIMITER else vocabulary[i] for i in row if i >= 0).strip()
            for row in targets]


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus WER and CER: edits summed over clips / reference words (characters) summed, as jiwer counts."""
    word_edits = sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses))
    char_edits = sum(edit_distance(list(r), list(h)) for r, h in zip(references, hypotheses))
    words = sum(len(r.split()) for r in references)
    chars = sum(len(r) for r in references)
    return {"wer": word_edits / max(words, 1), "cer": char_edits / max(chars, 1)}


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance: substitutions + deletions + insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


__all__ = ["edit_distance", "error_rates", "greedy_transcripts", "reference_transcripts"]
