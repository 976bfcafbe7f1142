"""Audio data: class folders or path tables -> checked WAV/FLAC files -> mono waveforms at the model's rate
-> batches; and the character vocabulary of transcripts (speech recognition)."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from torch.utils.data import Dataset

from lobell.data.splits import _raw_targets
from lobell.data.tables import (missing_or_empty, read_media_folder, read_table,
                                require_columns, resolve_paths, text_column)
from lobell.errors import LobellError
from lobell.problems.ctc import BLANK, UNKNOWN, WORD_DELIMITER, character_vocabulary  # noqa: F401 (re-exported)

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg"}
# The CTC vocabulary's special tokens, in id order: the blank is <pad> at id 0 (transformers' CTC
# models use config.pad_token_id as the blank), unknown characters map to <unk>, and `|` stands for
# the space between words (Wav2Vec2CTCTokenizer's word delimiter).
# resample_poly's filter grows with the ratio's terms: an odd rate such as 16001 Hz is resampled
# by the nearest ratio with a denominator up to this (a pitch error under 0.1%).
_MAX_RATIO_TERM = 1000
# Decoded, resampled clips stay in memory up to this many samples (256 MB of float32, ~4.4 hours at
# 16 kHz) so that later epochs skip decoding and resampling (a quarter of a tiny model's step time).
CACHE_SAMPLES = 64_000_000


class AudioReader:
    """The `read` function of `load_splits` for audio files: every file is checked before training starts."""

    def __call__(self, path: Path, input_column: str, label_column: str | None,
                 problem: str) -> tuple[list[str], list | None, pd.DataFrame]:
        """Audio paths, raw labels or transcripts (None without a label column), and the table they came from."""
        path = Path(path)
        if not path.exists():
            raise LobellError(f"data '{path}' does not exist")
        if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS and label_column is None:
            paths, raw, frame = [str(path)], None, pd.DataFrame({input_column: [str(path)]})
        elif path.is_dir():
            paths, raw, frame = _read_folder(path, input_column, label_column, problem)
        else:
            paths, raw, frame = _read_table(path, input_column, label_column, problem)
        for audio_path in paths:
            reason = audio_problem(audio_path)
            if reason is not None:
                raise LobellError(f"audio file '{audio_path}' (from '{path}') cannot be read: {reason}; fix or "
                                  f"remove it")
        return paths, raw, frame


def _read_folder(path: Path, input_column: str, label_column: str | None, problem: str):
    return read_media_folder(path, input_column, label_column, problem, AUDIO_EXTENSIONS, "audio", "yes/1.wav")


def _read_table(path: Path, input_column: str, label_column: str | None, problem: str):
    """A CSV/JSONL/parquet with an audio-path column (relative to the file) and a label or transcript column."""
    frame = read_table(path)
    required = {"data.audio_column": input_column}
    if label_column is not None:
        required["data.label_column"] = label_column
    require_columns(frame, required, path)
    paths = resolve_paths(text_column(frame, input_column, path), path, frame, "audio")
    raw = None
    if label_column is not None:
        if problem == "ctc":
            raw = [normalise_transcript(t) for t in text_column(frame, label_column, path)]
        else:  # class names, label lists (multi-label) or numbers (regression), as for text and images
            raw = _raw_targets(frame, label_column, path, problem)
    return paths, raw, frame


def audio_problem(path: str | Path) -> str | None:
    """Why `path` cannot be used as audio (missing, empty, not a sound file, no samples), or None."""
    path = Path(path)
    if (reason := missing_or_empty(path)) is not None:
        return reason
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, TypeError) as exc:  # soundfile's LibsndfileError is a RuntimeError
        return _reason(exc, path)
    if info.frames == 0:
        return "it holds no samples"
    return None


def load_waveform(path: str | Path, sampling_rate: int, max_samples: int | None = None) -> np.ndarray:
    """A mono float32 waveform at `sampling_rate` (channels averaged), cut to `max_samples`."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, TypeError) as exc:
        raise LobellError(f"audio file '{path}' cannot be read: {_reason(exc, Path(path))}; fix or remove it") from None
    wave = resample(data.mean(axis=1), rate, sampling_rate)
    return wave[:max_samples] if max_samples else wave


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """`wave` from `rate` to `target` Hz with a polyphase filter (scipy's resample_poly, anti-aliased)."""
    if rate == target:
        return np.ascontiguousarray(wave, dtype=np.float32)
    from scipy.signal import resample_poly

    ratio = Fraction(target, rate).limit_denominator(_MAX_RATIO_TERM)
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


def num_samples(path: str | Path, sampling_rate: int) -> int:
    """The waveform's length at `sampling_rate`, from the file header (nothing decoded)."""
    info = sf.info(str(path))
    return round(info.frames * sampling_rate / info.samplerate)


def _reason(exc: BaseException, path: Path) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.replace(f"'{path}'", "").replace(str(path), "").replace("Error opening : ", "").strip(" :.")


# --- Transcripts (speech recognition) ---

def normalise_transcript(text: str) -> str:
    """Lower case with single spaces: the form the character vocabulary and WER/CER use."""
    return re.sub(r"\s+", " ", str(text)).strip().lower()


# --- Datasets and batches ---

class AudioDataset(Dataset):
    """Audio files (or waveforms already at the model's rate) and their targets, decoded on access.

    `encode` turns a target into what the collator pads (a transcript into token ids); None keeps it.
    """

    def __init__(self, inputs: list, targets: np.ndarray, sampling_rate: int, max_samples: int | None = None,
                 encode=None):
        self.inputs, self.targets = inputs, targets
        self.sampling_rate, self.max_samples, self.encode = sampling_rate, max_samples, encode
        self.cache: dict[str, np.ndarray] = {}
        self.cached_samples = 0

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict:
        source = self.inputs[index]
        if isinstance(source, (str, Path)):
            wave = self._waveform(str(source))
        else:
            wave = np.asarray(source, dtype=np.float32).reshape(-1)[: self.max_samples]
        target = self.targets[index]
        return {"input_values": wave, "target": self.encode(target) if self.encode else target, "index": index}

    def _waveform(self, path: str) -> np.ndarray:
        wave = self.cache.get(path)
        if wave is None:
            wave = load_waveform(path, self.sampling_rate, self.max_samples)
            if self.cached_samples + wave.size <= CACHE_SAMPLES:
                self.cache[path] = wave
                self.cached_samples += wave.size
        return wave

    def lengths(self) -> list[int]:
        """Samples per clip at the model's rate (length-grouped batches waste less padding)."""
        lengths = [num_samples(s, self.sampling_rate) if isinstance(s, (str, Path)) else np.asarray(s).size
                   for s in self.inputs]
        return [min(n, self.max_samples) if self.max_samples else n for n in lengths]


class AudioCollator:
    """Pad a batch of waveforms with the model's feature extractor; add targets, clip lengths and indices.

    CTC targets (token-id lists) are padded with -100, PyTorch's ignore index, to the longest transcript.
    """

    def __init__(self, feature_extractor, target_dtype: torch.dtype | None):
        self.feature_extractor = feature_extractor
        self.target_dtype = target_dtype  # None: token-id sequences (CTC)

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        waves = [item["input_values"] for item in items]
        extractor = self.feature_extractor
        features = extractor(waves, sampling_rate=extractor.sampling_rate, padding=True, return_tensors="pt",
                             return_attention_mask=bool(getattr(extractor, "return_attention_mask", False)))
        batch = {key: value for key, value in features.items()}
        batch["input_lengths"] = torch.tensor([len(w) for w in waves], dtype=torch.long)
        batch["targets"] = self._targets([item["target"] for item in items])
        batch["index"] = torch.tensor([item["index"] for item in items], dtype=torch.long)
        return batch

    def _targets(self, targets: list) -> torch.Tensor:
        if self.target_dtype is not None:
            return torch.as_tensor(np.stack([np.asarray(t) for t in targets]), dtype=self.target_dtype)
        padded = torch.full((len(targets), max(1, max(len(t) for t in targets))), -100, dtype=torch.long)
        for row, ids in enumerate(targets):
            padded[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return padded
