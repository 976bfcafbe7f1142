"""Audio fixtures: tiny random wav2vec2 checkpoints and words spoken by Debian's espeak-ng."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import require_tool

ESPEAK_INSTALL = "apt-get install -y espeak-ng"
# Different voices, speeds and pitches: the same word never sounds quite the same twice.
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-us+f3", "en-gb+m3", "en-us+f1", "en-gb-x-rp+f4"]
SPEEDS = [130, 170, 210]


def speak(text: str, path: Path, voice: str = "en-us", speed: int = 170, pitch: int = 50) -> Path:
    """`text` spoken by espeak-ng into a 22050 Hz mono WAV file."""
    espeak = require_tool("espeak-ng", ESPEAK_INSTALL)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([espeak, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text], check=True,
                   capture_output=True)
    return path


def spoken_words(folder: Path, words: list[str], voices: list[str] = VOICES, speeds: list[int] = SPEEDS,
                 column: str = "label") -> pd.DataFrame:
    """Each word in each voice at each speed: a table of `audio` (relative path) and `column` (the word)."""
    rows = []
    for word, voice, speed in itertools.product(words, voices, speeds):
        name = f"{word.replace(' ', '_')}_{voice.replace('+', '_')}_{speed}.wav"
        speak(word, folder / name, voice, speed)
        rows.append({"audio": name, column: word})
    return pd.DataFrame(rows)


def make_tiny_wav2vec2(directory: Path, hidden: int = 32, seed: int = 0, attention_mask: bool = True) -> Path:
    """A 2-block, `hidden`-wide random wav2vec2 (4 conv layers, 320x down-sampling: 50 frames a second at 16 kHz)
    with its feature extractor, saved like a hub checkpoint."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    directory.mkdir(parents=True, exist_ok=True)
    config = Wav2Vec2Config(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=2 * hidden,
                            conv_dim=(32, 32, 32, 32), conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                            do_stable_layer_norm=True, classifier_proj_size=hidden, mask_time_prob=0.0)
    torch.manual_seed(seed)
    Wav2Vec2Model(config).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=attention_mask).save_pretrained(directory)
    return directory


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny models run several times faster on one thread when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("tiny_wav2vec2"))
