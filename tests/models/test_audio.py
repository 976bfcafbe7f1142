"""Audio classification: reading and resampling, the layer map with its frozen feature encoder, and
an end-to-end CLI run on words spoken by espeak-ng with a tiny random wav2vec2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from audio_fixtures import one_thread, tiny_wav2vec2  # noqa: F401
from audio_fixtures import speak, spoken_words
from safetensors.torch import load_file
from test_bad_input import user_error

from lobell.cli import main
from lobell.config import StrategyConfig
from lobell.data.audio import AudioCollator, AudioReader, load_waveform
from lobell.errors import LobellError
from lobell.models.audio import AudioAdapter
from lobell.strategies.plans import build_plan


@pytest.fixture(scope="module")
def yes_no(tmp_path_factory):
    """'yes' and 'no', each in 8 espeak voices at 3 speeds (48 clips), in one class folder per word."""
    root = tmp_path_factory.mktemp("yes_no")
    for word in ("yes", "no"):
        spoken_words(root / word, [word])
    return root


def test_resampling_22050_to_16000_keeps_pitch_and_duration(tmp_path):
    rate, seconds, tone = 22050, 1.0, 440.0
    time = np.arange(int(rate * seconds)) / rate
    sine = 0.5 * np.sin(2 * np.pi * tone * time)
    sf.write(tmp_path / "stereo.wav", np.stack([sine, sine], axis=1), rate)  # mono mix of equal channels = sine
    wave = load_waveform(tmp_path / "stereo.wav", 16000)
    assert wave.dtype == np.float32 and wave.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.fft.rfftfreq(len(wave), 1 / 16000)[spectrum.argmax()] - tone) <= 1.0
    assert abs(np.abs(wave[1000:-1000]).max() - 0.5) < 0.01  # no gain change away from the edges
    spoken = speak("three", tmp_path / "three.wav")  # espeak-ng writes 22050 Hz
    frames = sf.info(str(spoken)).frames
    assert sf.info(str(spoken)).samplerate == 22050
    assert abs(len(load_waveform(spoken, 16000)) - frames * 16000 / 22050) <= 1


def test_layer_map_puts_the_frozen_feature_encoder_first_for_every_strategy(tiny_wav2vec2):
    adapter = AudioAdapter.from_pretrained(str(tiny_wav2vec2), ["no", "yes"])
    groups = adapter.layer_map.groups
    names = [n for g in groups for n in g.param_names]
    assert sorted(names) == sorted(n for n, _ in adapter.model.named_parameters())  # each parameter once
    assert groups[0].name == "wav2vec2.feature_extractor" and groups[0].frozen
    assert all(n.startswith("wav2vec2.feature_extractor.") for n in groups[0].param_names)
    assert groups[-1].is_head and not any(g.frozen for g in groups[1:])
    for name in ("feature-extraction", "gradual", "full", "discriminative", "two-stage"):
        plan = build_plan(StrategyConfig(name=name), adapter.layer_map, epochs=8)
        assert all(0 not in stage.trainable for stage in plan), name
        assert plan[-1].trainable[-1] == len(groups) - 1
    assert build_plan(StrategyConfig(name="gradual"), adapter.layer_map, 8)[-1].trainable == list(range(1, len(groups)))
    trained = AudioAdapter.from_pretrained(str(tiny_wav2vec2), ["no", "yes"], train_feature_encoder=True)
    assert 0 in build_plan(StrategyConfig(name="full"), trained.layer_map, 2)[0].trainable


def test_hubert_and_ast_style_models_fit_the_adapter(tmp_path):
    from transformers import (
        ASTConfig,
        ASTFeatureExtractor,
        ASTModel,
        HubertConfig,
        HubertModel,
        Wav2Vec2FeatureExtractor,
    )

    hubert, ast = tmp_path / "hubert", tmp_path / "ast"
    HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             conv_dim=(32, 32), conv_kernel=(10, 8), conv_stride=(5, 4), num_conv_pos_embeddings=16,
                             num_conv_pos_embedding_groups=2, classifier_proj_size=32)).save_pretrained(hubert)
    Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(hubert)  # HuBERT-base pads without a mask
    ASTModel(ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       num_mel_bins=32, max_length=64)).save_pretrained(ast)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(ast)
    clips = [{"input_values": np.random.default_rng(i).normal(size=n).astype(np.float32), "target": i, "index": i}
             for i, n in enumerate((8000, 12000))]
    for folder, frozen in ((hubert, "hubert.feature_extractor"), (ast, None)):
        adapter = AudioAdapter.from_pretrained(str(folder), ["a", "b", "c"])
        assert [g.name for g in adapter.layer_map.groups if g.frozen] == ([frozen] if frozen else [])
        batch = AudioCollator(adapter.feature_extractor, torch.long)(clips)
        assert adapter.forward(adapter.model, batch).shape == (2, 3)


def test_audio_classification_end_to_end_through_the_cli(tiny_wav2vec2, yes_no, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "task=audio-classification", f"model={tiny_wav2vec2}", f"data.train={yes_no}",
                 "data.val_fraction=0.25", "epochs=6", "batch_size=8", "optimizer.lr=3e-3", "strategy=full",
                 "strategy.backbone_lr_scale=1", "early_stopping.patience=null", "recipe=false",
                 f"output_dir={run}", "--quiet"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] >= 0.75  # 12 clips, chance is 0.5; measured 1.0
    # The feature encoder never trained: bit for bit the checkpoint's.
    base, tuned = load_file(tiny_wav2vec2 / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    encoder = [k for k in base if k.startswith("feature_extractor.")]
    assert encoder and all(torch.equal(base[k], tuned[f"wav2vec2.{k}"]) for k in encoder)
    assert any(not torch.equal(base[k], tuned[f"wav2vec2.{k}"]) for k in base if k.startswith("encoder.layers."))
    stages = json.loads((run / "stages.json").read_text())
    assert stages[0]["always_frozen"] == ["wav2vec2.feature_extractor"]
    # `lobell predict` on a folder of clips == plain transformers on the same clips.
    clips = sorted((yes_no / "yes").glob("*.wav"))[:3] + sorted((yes_no / "no").glob("*.wav"))[:3]
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for clip in clips:
        (folder / clip.name).write_bytes(clip.read_bytes())
    assert main(["predict", str(run), str(folder), "--output", str(tmp_path / "preds.csv"), "--quiet"]) == 0
    table = pd.read_csv(tmp_path / "preds.csv")
    plain = _plain_transformers_predictions(run / "model", [folder / c.name for c in clips])
    assert [p for p, _ in plain] == table["prediction"].tolist()
    np.testing.assert_allclose(table["probability"], [p for _, p in plain], atol=1e-4)


def _plain_transformers_predictions(model_dir, paths) -> list[tuple[str, float]]:
    """Each clip alone through AutoModelForAudioClassification (sorted by file name, as predict reads a folder)."""
    from fractions import Fraction

    from scipy.signal import resample_poly
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_pretrained(model_dir).eval()
    extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    out = []
    for path in sorted(paths):
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
        ratio = Fraction(extractor.sampling_rate, rate)
        wave = resample_poly(wave.mean(axis=1), ratio.numerator, ratio.denominator)
        with torch.no_grad():
            logits = model(**extractor([wave], sampling_rate=extractor.sampling_rate, return_tensors="pt")).logits
        probs = logits.softmax(-1)[0]
        out.append((model.config.id2label[int(probs.argmax())], float(probs.max())))
    return out


def test_a_bad_audio_file_is_one_error_naming_it(tiny_wav2vec2, yes_no, tmp_path, capsys):
    good = sorted((yes_no / "yes").glob("*.wav"))[:4] + sorted((yes_no / "no").glob("*.wav"))[:4]
    bad = tmp_path / "broken.wav"
    bad.write_text("not a sound file")
    rows = [{"audio": str(p), "label": p.parent.name} for p in good] + [{"audio": "broken.wav", "label": "yes"}]
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    error = user_error(capsys, "train", "task=audio-classification", f"model={tiny_wav2vec2}",
                       f"data.train={tmp_path / 'train.csv'}", f"output_dir={tmp_path / 'run'}")
    assert "audio file" in error and str(bad) in error and "cannot be read" in error
    with pytest.raises(LobellError, match="the file does not exist"):
        pd.DataFrame([{"audio": "missing.wav", "label": "yes"}]).to_csv(tmp_path / "missing.csv", index=False)
        AudioReader()(tmp_path / "missing.csv", "audio", "label", "classification")
    pd.read_csv(tmp_path / "train.csv").rename(columns={"audio": "file"}).to_csv(tmp_path / "renamed.csv", index=False)
    with pytest.raises(LobellError, match=r"has no column 'audio' \(data.audio_column\)"):
        AudioReader()(tmp_path / "renamed.csv", "audio", "label", "classification")


def _tones(folder, clips: list[tuple[str, list[float]]], seed: int = 0, rate: int = 16000):
    """Half-second clips, each a sum of sines at the given frequencies with random phase and a little noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    time = np.arange(rate // 2) / rate
    for name, frequencies in clips:
        wave = sum(np.sin(2 * np.pi * f * time + rng.uniform(0, 2 * np.pi)) for f in frequencies)
        sf.write(folder / name, (0.3 * wave + rng.normal(0, 0.01, len(time))).astype(np.float32), rate)


def _train_audio(task, table, model, out, extra) -> dict:
    code = main(["train", f"task={task}", f"model={model}", f"data.train={table}", "data.val_fraction=0.25",
                 "batch_size=8", "optimizer.lr=3e-3", "strategy=full", "strategy.backbone_lr_scale=1",
                 "early_stopping.patience=null", "recipe=false", f"output_dir={out}", *extra, "--quiet"])
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


def test_audio_regression_learns_pitch_and_reloads_with_plain_transformers(tiny_wav2vec2, tmp_path):
    rng = np.random.default_rng(1)
    pitches = rng.uniform(200, 1000, 40)
    _tones(tmp_path / "clips", [(f"c{i}.wav", [p]) for i, p in enumerate(pitches)])
    pd.DataFrame({"audio": [f"c{i}.wav" for i in range(40)], "khz": np.round(pitches / 1000, 4)}).to_csv(
        tmp_path / "clips" / "pitch.csv", index=False)
    metrics = _train_audio("audio-regression", tmp_path / "clips" / "pitch.csv", tiny_wav2vec2, tmp_path / "run",
                           ["data.label_column=khz", "epochs=20"])
    assert metrics["validation"]["r2"] > 0.2 > metrics["before"]["r2"]  # the mean's r2 is 0; measured 0.42
    # The saved model's raw output is the prediction (no target scaling to undo), as the model card says.
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions_validation.jsonl").open()]
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_pretrained(tmp_path / "run" / "model").eval()
    extractor = AutoFeatureExtractor.from_pretrained(tmp_path / "run" / "model")
    wave, rate = sf.read(rows[0]["input"], dtype="float32")
    with torch.no_grad():
        logits = model(**extractor([wave], sampling_rate=rate, return_tensors="pt")).logits
    assert model.config.num_labels == 1 and float(logits[0, 0]) == pytest.approx(rows[0]["prediction"], abs=1e-4)
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "AutoModelForAudioClassification" in card and "print(float(logits[0, 0]))" in card


def test_audio_multi_label_finds_each_tone(tiny_wav2vec2, tmp_path):
    sets = [["low"], ["high"], ["low", "high"]]
    frequencies = {"low": 250, "high": 1800}
    rng = np.random.default_rng(2)
    chosen = [sets[i % 3] for i in range(36)]
    _tones(tmp_path / "clips", [(f"c{i}.wav", [frequencies[t] * rng.uniform(0.95, 1.05) for t in tones])
                                for i, tones in enumerate(chosen)])
    pd.DataFrame({"audio": [f"c{i}.wav" for i in range(36)], "label": ["|".join(t) for t in chosen]}).to_csv(
        tmp_path / "clips" / "tones.csv", index=False)
    metrics = _train_audio("audio-multi-label", tmp_path / "clips" / "tones.csv", tiny_wav2vec2, tmp_path / "run",
                           ["epochs=8"])
    # exact-set accuracy: chance is about 1/3; measured 0.44 before, 0.89 after
    assert metrics["validation"]["f1_macro"] >= 0.8 and metrics["validation"]["accuracy"] >= 0.75
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and sorted(config["id2label"].values()) == [
        "high", "low"]
