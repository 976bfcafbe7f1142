"""Make the data of examples/spoken_digits_*.yaml: the words zero..nine spoken by espeak-ng.

Each digit is spoken in 8 English voices at 3 speeds (240 clips, 22050 Hz WAV, ~0.5 s each) and
split by voice: 6 voices train, 1 validates, 1 tests, so every score is on a voice the model never
heard. Needs Debian's espeak-ng (`apt-get install -y espeak-ng`).

No pre-trained speech model can be downloaded where lobell is tested, so the script also saves a
tiny *random* wav2vec2 (2 blocks, 32 wide) with its feature extractor, as a stand-in that makes the
example commands run offline. With a network, set `model: facebook/wav2vec2-base` (classification)
or `facebook/wav2vec2-base` / `facebook/hubert-base-ls960` (speech recognition) instead.

    python examples/make_spoken_digits.py        # writes data/spoken_digits/
    lobell train examples/spoken_digits_classification.yaml
    lobell train examples/spoken_digits_speech.yaml

The tables also hold `value` (the digit as a number: audio-regression) and `properties` (even/odd,
prime, big: audio-multi-label); docs/audio.md has the commands.
"""

import itertools
import shutil
import subprocess
from pathlib import Path

import pandas as pd

OUT = Path("data/spoken_digits")
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = {"train": ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-us+f3", "en-gb+m3"],
          "validation": ["en-us+f1"], "test": ["en-gb-x-rp+f4"]}
SPEEDS = [130, 170, 210]  # words per minute


def speak(text: str, path: Path, voice: str, speed: int) -> None:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                   capture_output=True)


def tiny_wav2vec2(directory: Path) -> None:
    """A random 2-block, 32-wide wav2vec2 (50 frames a second at 16 kHz) saved like a hub checkpoint."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(32, 32, 32, 32), conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                            do_stable_layer_norm=True, classifier_proj_size=32, mask_time_prob=0.0)
    torch.manual_seed(0)
    Wav2Vec2Model(config).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True).save_pretrained(directory)


def _properties(value: int) -> str:
    """The labels of audio-multi-label: even or odd, prime, and 'big' for 5-9 (e.g. 'odd|prime|big')."""
    labels = ["even" if value % 2 == 0 else "odd"]
    labels += ["prime"] if value in (2, 3, 5, 7) else []
    labels += ["big"] if value >= 5 else []
    return "|".join(labels)


def main() -> None:
    if shutil.which("espeak-ng") is None:
        raise SystemExit("needs espeak-ng: apt-get install -y espeak-ng")
    clips = OUT / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    for split, voices in VOICES.items():
        rows = []
        for digit, voice, speed in itertools.product(DIGITS, voices, SPEEDS):
            name = f"{digit}_{voice.replace('+', '_')}_{speed}.wav"
            speak(digit, clips / name, voice, speed)
            value = DIGITS.index(digit)
            rows.append({"audio": f"clips/{name}", "text": digit, "value": value, "properties": _properties(value)})
        pd.DataFrame(rows).to_csv(OUT / f"{split}.csv", index=False)
        print(f"{OUT / split}.csv: {len(rows)} clips, voices {', '.join(voices)}")
    tiny_wav2vec2(OUT / "tiny-wav2vec2")
    print(f"{OUT / 'tiny-wav2vec2'}: a tiny random wav2vec2 (a stand-in for a pre-trained one)")


if __name__ == "__main__":
    main()
