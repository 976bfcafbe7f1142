"""Speech recognition: the character vocabulary, CTC loss and decoding against transformers' own, WER/CER,
and a tiny random wav2vec2 over-fitting espeak-spoken digits end to end (train, predict, plain reload)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from audio_fixtures import one_thread, tiny_wav2vec2  # noqa: F401
from audio_fixtures import spoken_words

from lobell.cli import main
from lobell.config import load_config
from lobell.data.audio import AudioCollator, character_vocabulary, normalise_transcript
from lobell.models.audio import SpeechAdapter, ctc_tokenizer
from lobell.training.losses import ctc_loss
from lobell.problems import make_problem
from lobell.resolve import resolve
from lobell.transcripts import edit_distance, error_rates, greedy_transcripts

DIGITS = ["one", "two", "three", "four"]


def test_vocabulary_tokenizer_and_error_rates():
    assert normalise_transcript("  Three\tTWO  one ") == "three two one"
    vocabulary = character_vocabulary(["three two", "one"])
    assert vocabulary == ["<pad>", "<unk>", "|", "e", "h", "n", "o", "r", "t", "w"]
    tok = ctc_tokenizer(vocabulary)
    assert tok.convert_ids_to_tokens(list(range(len(tok)))) == vocabulary
    assert tok.decode(tok("two one")["input_ids"]) == "two one"
    assert tok("ox")["input_ids"] == [vocabulary.index("o"), 1]  # x is unknown
    assert edit_distance(list("kitten"), list("sitting")) == 3
    rates = error_rates(["the cat sat", "on"], ["the cat sad", ""])
    assert rates["wer"] == pytest.approx(2 / 4)
    assert rates["cer"] == pytest.approx(3 / 13)  # 1 + 2 edits over 11 + 2 characters


def test_ctc_loss_and_greedy_decoding_match_transformers(tiny_wav2vec2):
    """Our loss over the adapter's frame mask == the model's own CTC loss (with its attention mask), and our
    numpy decoding == Wav2Vec2CTCTokenizer.batch_decode on the real frames."""
    vocabulary = character_vocabulary(DIGITS)
    adapter = SpeechAdapter.from_pretrained(str(tiny_wav2vec2), vocabulary)
    rng = np.random.default_rng(0)
    items = [{"input_values": rng.normal(size=n).astype(np.float32), "target": adapter.encode_transcript(text),
              "index": i} for i, (n, text) in enumerate([(16000, "three"), (9000, "two one"), (12000, "four")])]
    batch = AudioCollator(adapter.feature_extractor, None)(items)
    model = adapter.model.eval()
    with torch.no_grad():
        outputs = adapter.forward(model, batch)
        own = model(input_values=batch["input_values"], attention_mask=batch["attention_mask"],
                    labels=batch["targets"]).loss
        assert float(ctc_loss(outputs, batch["targets"])) == pytest.approx(float(own), rel=1e-5)
        frames = model._get_feat_extract_output_lengths(batch["input_lengths"])
    assert outputs[..., -1].sum(-1).tolist() == frames.tolist()
    ids = outputs[..., :-1].argmax(-1)
    expected = [adapter.tokenizer.decode(ids[i, : frames[i]]) for i in range(len(items))]
    assert greedy_transcripts(outputs.numpy(), vocabulary) == expected


def test_monitor_defaults_to_word_error_rate():
    cfg = load_config(None, ["task=speech-recognition"])
    assert resolve(cfg, make_problem("ctc", ["<pad>", "<unk>", "|", "a"])).monitor == "wer"


def test_ctc_overfits_spoken_digits_and_reloads_with_plain_transformers(tiny_wav2vec2, tmp_path, capsys):
    table = spoken_words(tmp_path / "digits", DIGITS, voices=["en-us"], speeds=[150], column="text")
    table.to_csv(tmp_path / "digits" / "clips.csv", index=False)
    pd.concat([table] * 15).to_csv(tmp_path / "digits" / "train.csv", index=False)  # 15 passes per epoch
    run = tmp_path / "run"
    code = main(["train", "task=speech-recognition", f"model={tiny_wav2vec2}",
                 f"data.train={tmp_path / 'digits' / 'train.csv'}",
                 f"data.validation={tmp_path / 'digits' / 'clips.csv'}",
                 "data.label_column=text", "epochs=20", "batch_size=4", "optimizer.lr=1e-2", "strategy=full",
                 "strategy.backbone_lr_scale=1", "scheduler=constant", "early_stopping.patience=null",
                 "early_stopping.monitor=cer", "recipe=false", f"output_dir={run}", "--quiet"])
    assert code == 0, capsys.readouterr().err
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [row["train_loss"] for row in history if "train_loss" in row]
    assert losses[-1] < 0.25 * losses[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["before"]["cer"] > 0.9 and metrics["validation"]["cer"] < 0.5  # measured 4.2 -> 0.2
    # The feature encoder stayed frozen; the vocabulary is the transcripts' characters.
    assert json.loads((run / "stages.json").read_text())[0]["always_frozen"] == ["wav2vec2.feature_extractor"]
    assert json.loads((run / "model" / "lobell.json").read_text())["labels"] == character_vocabulary(DIGITS)
    # `lobell predict` writes transcripts; plain AutoModelForCTC + AutoProcessor hear the same.
    assert main(["predict", str(run), str(tmp_path / "digits" / "clips.csv"), "--output",
                 str(tmp_path / "preds.csv"), "--quiet"]) == 0
    predicted = pd.read_csv(tmp_path / "preds.csv", keep_default_na=False)
    assert list(predicted.columns) == ["audio", "transcript"]
    plain = [_model_card_transcript(run, tmp_path / "digits" / name) for name in table["audio"]]
    assert predicted["transcript"].tolist() == plain
    assert sum(p == t for p, t in zip(plain, table["text"])) >= 1


def _model_card_transcript(run, clip) -> str:
    """Run the model card's own plain-transformers snippet on `clip` and return what it prints."""
    import contextlib
    import io

    card = (run / "model" / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card[card.index("## How to load it"):], re.DOTALL).group(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code.replace('"clip.wav"', repr(str(clip))), {})  # noqa: S102 - our own generated snippet
    return printed.getvalue().strip()


def test_ctc_in_two_processes_gathers_every_clip_once_with_its_own_transcript(tiny_wav2vec2, tmp_path):
    """Frame outputs and transcripts differ in length per process: they are padded to gather, then trimmed."""
    import subprocess
    import sys

    table = spoken_words(tmp_path / "clips", ["one", "three", "seven", "twenty two", "eight"], voices=["en-us", "en-gb"],
                         speeds=[150], column="text")
    table.to_csv(tmp_path / "clips" / "all.csv", index=False)
    run = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "lobell.cli", "train", "--quiet", "--processes", "2",
                           "task=speech-recognition", f"model={tiny_wav2vec2}", f"data.train={tmp_path / 'clips' / 'all.csv'}",
                           f"data.validation={tmp_path / 'clips' / 'all.csv'}", "data.label_column=text", "epochs=2",
                           "batch_size=2", "optimizer.lr=1e-2", "recipe=false", "strategy=full", f"output_dir={run}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "predictions_validation.jsonl").read_text().splitlines()]
    # 10 clips over 2 processes in batches of 2: uneven lengths across ranks, each clip exactly once
    assert [row["input"] for row in rows] == [str(tmp_path / "clips" / a) for a in table["audio"]]
    assert [row["target"] for row in rows] == table["text"].tolist()
    metrics = json.loads((run / "metrics.json").read_text())["validation"]
    assert metrics["cer"] == pytest.approx(error_rates([r["target"] for r in rows], [r["prediction"] for r in rows])["cer"])
