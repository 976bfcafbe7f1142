"""Transformers audio encoders (wav2vec2, HuBERT, AST style): a new classification head, or a new CTC head
over a character vocabulary; each with its feature extractor and a layer map whose CNN feature encoder
group stays frozen unless asked (the wav2vec2 fine-tuning practice)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from torch import nn

from lobell.data.audio import BLANK, UNKNOWN, WORD_DELIMITER
from lobell.errors import LobellError
from lobell.models.hub import resolve_pretrained
from lobell.models.text import PROBLEM_TYPES, _quiet_transformers, head_prefixes
from lobell.problems import make_problem
from lobell.strategies.layer_map import LayerGroup, LayerMap, build_layer_map


def feature_encoder_prefix(model: nn.Module) -> str | None:
    """The CNN that turns raw samples into frames (`wav2vec2.feature_extractor`), or None (AST has none)."""
    base = getattr(model, "base_model_prefix", "")
    encoder = getattr(getattr(model, base, None), "feature_extractor", None)
    if isinstance(encoder, nn.Module) and any(True for _ in encoder.parameters()):
        return f"{base}.feature_extractor"
    return None


def audio_layer_map(model: nn.Module, head: list[str], train_feature_encoder: bool, source: str) -> LayerMap:
    """The generic layer map with the CNN feature encoder pulled out as the first group.

    That group is `frozen` (no strategy ever trains it) unless `train_feature_encoder`: with few
    labelled hours, wav2vec2 and HuBERT fine-tune best with their convolutional front end fixed.
    """
    prefix = feature_encoder_prefix(model)
    if prefix is None:
        return build_layer_map(model, head, source)
    # Set aside with the head, the encoder leaves the other units to group (and merge) among themselves.
    *backbone, aside = build_layer_map(model, [*head, prefix], source).groups
    encoder = [name for name in aside.param_names if name.startswith(prefix + ".")]
    new_head = [name for name in aside.param_names if not name.startswith(prefix + ".")]
    return LayerMap([LayerGroup(prefix, encoder, frozen=not train_feature_encoder), *backbone,
                     LayerGroup("head", new_head, is_head=True)], source)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model reads: padded samples (or AST's filter banks) and, where it uses one, the attention mask."""
    return {key: batch[key] for key in ("input_values", "attention_mask") if key in batch}


class AudioAdapter:
    """A transformers `AutoModelForAudioClassification`, its feature extractor and its layer map."""

    modality = "audio"

    def __init__(self, model: nn.Module, feature_extractor, name: str, new_params: set[str] = frozenset(),
                 train_feature_encoder: bool = False):
        self.model, self.feature_extractor, self.name = model, feature_extractor, name
        self.layer_map = audio_layer_map(
            model, head_prefixes(model, new_params), train_feature_encoder,
            source=f"transformers {type(model).__name__}: feature encoder (CNN), feature projection, each "
                   f"transformer block, new head")

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @classmethod
    def from_pretrained(cls, name: str, labels: list[str] | None, weights: bool = True,
                        train_feature_encoder: bool = False, problem: str = "classification") -> AudioAdapter:
        """Load the encoder and add a new head: one output per class or label, or one for regression
        (`labels` None); `weights=False` builds the structure only."""
        from transformers import AutoModelForAudioClassification

        kwargs = {"num_labels": make_problem(problem, labels).num_outputs, "problem_type": PROBLEM_TYPES[problem]}
        if labels:
            kwargs.update(id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
        model, extractor, new_params = _load(AutoModelForAudioClassification, name, weights, kwargs,
                                             "an audio classifier")
        return cls(model, extractor, name, new_params, train_feature_encoder)

    @classmethod
    def load(cls, directory: Path) -> AudioAdapter:
        """Reload a saved `model/` folder, exactly as plain transformers would."""
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        with _quiet_transformers():
            model = AutoModelForAudioClassification.from_pretrained(directory)
        return cls(model.eval(), AutoFeatureExtractor.from_pretrained(directory), _base_model(directory))

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**model_inputs(batch)).logits

    def save(self, directory: Path, extra: dict | None = None) -> None:
        with _quiet_transformers():
            self.model.save_pretrained(directory)
        self.feature_extractor.save_pretrained(directory)
        _write_info(directory, "audio", self.name, extra)


class SpeechAdapter:
    """A transformers `AutoModelForCTC` with a new character vocabulary (`Wav2Vec2CTCTokenizer`).

    `forward` returns the frame logits (batch, frames, vocabulary) with one more channel last: 1 for
    a frame of audio, 0 for a frame of padding. Padding whole batches with zeros (to gather them
    across processes or stack them across batches) so keeps saying which frames count.
    """

    modality = "speech"

    def __init__(self, model: nn.Module, feature_extractor, tokenizer, name: str, new_params: set[str] = frozenset(),
                 train_feature_encoder: bool = False):
        self.model, self.feature_extractor, self.tokenizer, self.name = model, feature_extractor, tokenizer, name
        self.layer_map = audio_layer_map(
            model, head_prefixes(model, new_params), train_feature_encoder,
            source=f"transformers {type(model).__name__}: feature encoder (CNN), feature projection, each "
                   f"transformer block, new CTC head")

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @property
    def vocabulary(self) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))

    @classmethod
    def from_pretrained(cls, name: str, vocabulary: list[str], weights: bool = True,
                        train_feature_encoder: bool = False) -> SpeechAdapter:
        """Load the encoder with a new CTC head over `vocabulary` (blank first, see data.audio.character_vocabulary)."""
        from transformers import AutoModelForCTC

        if vocabulary[:3] != [BLANK, UNKNOWN, WORD_DELIMITER]:  # a skeleton for `lobell layers`, or a hand-made list
            vocabulary = [BLANK, UNKNOWN, WORD_DELIMITER, *[v for v in vocabulary if v not in (BLANK, UNKNOWN,
                                                                                               WORD_DELIMITER)]]
        # mean: each clip's loss over its transcript length; zero_infinity: a clip too short for its
        # transcript contributes nothing instead of inf (the settings of transformers' CTC examples).
        kwargs = {"vocab_size": len(vocabulary), "pad_token_id": 0, "ctc_loss_reduction": "mean",
                  "ctc_zero_infinity": True}
        model, extractor, new_params = _load(AutoModelForCTC, name, weights, kwargs, "a CTC speech model")
        return cls(model, extractor, ctc_tokenizer(vocabulary), name, new_params, train_feature_encoder)

    @classmethod
    def load(cls, directory: Path) -> SpeechAdapter:
        """Reload a saved `model/` folder, exactly as plain transformers would (AutoModelForCTC + AutoProcessor)."""
        from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

        with _quiet_transformers():
            model = AutoModelForCTC.from_pretrained(directory)
        return cls(model.eval(), AutoFeatureExtractor.from_pretrained(directory),
                   AutoTokenizer.from_pretrained(directory), _base_model(directory))

    def encode_transcript(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(**model_inputs(batch)).logits
        # A pure function of the config: the adapter's own model answers for a wrapped one too.
        frames = self.model._get_feat_extract_output_lengths(batch["input_lengths"])
        real = torch.arange(logits.shape[1], device=logits.device)[None, :] < frames.to(logits.device)[:, None]
        return torch.cat([logits, real.unsqueeze(-1).to(logits.dtype)], dim=-1)

    def save(self, directory: Path, extra: dict | None = None) -> None:
        with _quiet_transformers():
            self.model.save_pretrained(directory)
        self.feature_extractor.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        _write_info(directory, "speech", self.name, extra)


def ctc_tokenizer(vocabulary: list[str]):
    """A Wav2Vec2CTCTokenizer over `vocabulary` (ids in list order), `|` between words, no bos/eos tokens."""
    from transformers import Wav2Vec2CTCTokenizer

    with tempfile.TemporaryDirectory() as folder:
        vocab_file = Path(folder) / "vocab.json"
        vocab_file.write_text(json.dumps({token: i for i, token in enumerate(vocabulary)}, ensure_ascii=False))
        return Wav2Vec2CTCTokenizer(str(vocab_file), unk_token=UNKNOWN, pad_token=BLANK,
                                    word_delimiter_token=WORD_DELIMITER, bos_token=None, eos_token=None)


def _load(auto_class, name: str, weights: bool, kwargs: dict, what: str):
    """(model, feature extractor, parameters the checkpoint did not hold); failures name the model."""
    from transformers import AutoConfig, AutoFeatureExtractor

    path = resolve_pretrained(name)
    try:
        extractor = AutoFeatureExtractor.from_pretrained(path)
        with _quiet_transformers():
            if not weights:
                return auto_class.from_config(AutoConfig.from_pretrained(path, **kwargs)), extractor, set()
            model, info = auto_class.from_pretrained(path, ignore_mismatched_sizes=True, output_loading_info=True,
                                                     **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LobellError(f"model '{name}' could not be loaded as {what}: {reason}") from None
    new_params = set(info["missing_keys"]) | {k if isinstance(k, str) else k[0] for k in info["mismatched_keys"]}
    return model, extractor, new_params


def _write_info(directory: Path, modality: str, name: str, extra: dict | None) -> None:
    (Path(directory) / "lobell.json").write_text(json.dumps({"modality": modality, "base_model": name,
                                                             **(extra or {})}, indent=2))


def _base_model(directory: Path) -> str:
    info = Path(directory) / "lobell.json"
    return json.loads(info.read_text()).get("base_model", str(directory)) if info.is_file() else str(directory)


def loading_snippet(model_dir: Path, modality: str, problem: str = "classification") -> str:
    """The model card's code: load `model/` with plain transformers and soundfile, predict one clip."""
    if modality == "speech":
        build = ("from transformers import AutoModelForCTC, AutoProcessor\n\n"
                 f"model_dir = {str(model_dir)!r}  # this folder\n"
                 "model = AutoModelForCTC.from_pretrained(model_dir).eval()\n"
                 "processor = AutoProcessor.from_pretrained(model_dir)  # feature extractor + character tokenizer")
        extractor, read_out = "processor", "print(processor.batch_decode(logits.argmax(-1))[0])  # greedy CTC decoding"
        rate = "processor.feature_extractor.sampling_rate"
    else:
        build = ("from transformers import AutoFeatureExtractor, AutoModelForAudioClassification\n\n"
                 f"model_dir = {str(model_dir)!r}  # this folder\n"
                 "model = AutoModelForAudioClassification.from_pretrained(model_dir).eval()\n"
                 "extractor = AutoFeatureExtractor.from_pretrained(model_dir)")
        extractor, read_out = "extractor", {
            "classification": "print(model.config.id2label[int(logits.argmax())])",
            "multi-label": "print([model.config.id2label[i] for i, p in enumerate(logits.sigmoid()[0]) if p >= 0.5])",
            "regression": "print(float(logits[0, 0]))"}[problem]
        rate = "extractor.sampling_rate"
    return f"""With plain transformers, soundfile and scipy (no lobell needed):

```python
from fractions import Fraction

import soundfile as sf
import torch
from scipy.signal import resample_poly
{build}
rate = {rate}
wave, file_rate = sf.read("clip.wav", dtype="float32", always_2d=True)
ratio = Fraction(rate, file_rate)
wave = resample_poly(wave.mean(axis=1), ratio.numerator, ratio.denominator)  # mono, at the model's rate
with torch.no_grad():
    logits = model(**{extractor}([wave], sampling_rate=rate, return_tensors="pt")).logits
{read_out}
```
"""
