"""task: masked-lm and pretrain: on a tiny random BERT and a synthetic domain language."""

from __future__ import annotations

import json
import random

import pytest

from lobell.config import load_config
from lobell.training.runner import train

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def domain_texts(n: int, seed: int) -> list[str]:
    """Runs of consecutive letters ('f g h i j'): a masked letter follows from its neighbours."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        start, length = rng.randrange(0, 18), rng.randint(5, 8)
        texts.append(" ".join(LETTERS[start:start + length]))
    return texts


@pytest.fixture()
def domain_files(tmp_path):
    files = {}
    for name, n, seed in [("train", 300, 1), ("validation", 60, 2)]:
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text("\n".join(domain_texts(n, seed)) + "\n")
    return files


def mlm_overrides(tiny_bert, domain_files, tmp_path, *extra) -> list[str]:
    return ["task=masked-lm", f"model={tiny_bert}", f"data.train={domain_files['train']}",
            f"data.validation={domain_files['validation']}", "optimizer.lr=3e-3", "strategy=full",
            "scheduler.warmup_ratio=0", "batch_size=16", "epochs=6", "precision=fp32", "recipe=false",
            f"output_dir={tmp_path / 'mlm'}", *extra]


@pytest.mark.parametrize("whole_word", [False, True])
def test_perplexity_on_held_back_domain_text_falls(tiny_bert, domain_files, tmp_path, whole_word):
    cfg = load_config(None, mlm_overrides(tiny_bert, domain_files, tmp_path, f"data.whole_word_mask={whole_word}"))
    result = train(cfg, quiet=True)
    before, after = result.metrics["before"]["perplexity"], result.metrics["validation"]["perplexity"]
    assert after < 0.5 * before, (before, after)
    assert result.metrics["validation"]["masked_tokens"] > 0


def test_adapted_encoder_loads_as_masked_lm_and_as_classifier(tiny_bert, domain_files, tmp_path):
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    cfg = load_config(None, mlm_overrides(tiny_bert, domain_files, tmp_path, "epochs=1"))
    model_dir = train(cfg, quiet=True).run_dir / "model"
    mlm = AutoModelForMaskedLM.from_pretrained(model_dir)
    classifier = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3)
    trained = mlm.bert.encoder.layer[0].attention.self.query.weight
    assert torch.equal(classifier.bert.encoder.layer[0].attention.self.query.weight, trained)
    original = AutoModelForMaskedLM.from_pretrained(tiny_bert).bert.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(original, trained)  # the encoder really changed
    assert classifier.classifier.out_features == 3


def test_eval_masks_repeat_and_training_masks_change(tiny_bert):
    from transformers import AutoTokenizer

    from lobell.data.masked_text import MaskableText, MaskingCollator

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    dataset = MaskableText(tokenizer, domain_texts(16, 3), 32, offsets=True)
    items = [dataset[i] for i in range(16)]
    evaluate = MaskingCollator(tokenizer, 0.3, True, train=False)
    assert (evaluate(items)["targets"] == evaluate(items)["targets"]).all()
    fit = MaskingCollator(tokenizer, 0.3, False, train=True)
    assert not (fit(items)["targets"] == fit(items)["targets"]).all()


def test_pretrain_then_classifier_in_one_run(tiny_bert, text_overrides, tmp_path):
    extra = tmp_path / "extra.txt"
    extra.write_text("\n".join(domain_texts(50, 4)) + "\n")
    cfg = load_config(None, [*text_overrides, "epochs=2", f"pretrain.extra_text={extra}", "pretrain.epochs=2",
                             "pretrain.lr=3e-3"])
    result = train(cfg, quiet=True)
    phase = result.metrics["pretrain"]
    assert phase["perplexity_after"] < phase["perplexity_before"]
    assert phase["base_model"] == str(tiny_bert)
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["pretrain"] == phase and saved["validation"]["accuracy"] > 0.6
    assert (result.run_dir / "pretrain" / "model" / "config.json").is_file()
    lobell_json = json.loads((result.run_dir / "model" / "lobell.json").read_text())
    assert lobell_json["base_model"].endswith("pretrain/model")
    assert "Masked-LM pre-training" in (result.run_dir / "report.html").read_text()


def test_bad_input_is_one_sentence(tmp_path):
    from lobell.data.masked_text import read_texts
    from lobell.errors import LobellError

    with pytest.raises(LobellError, match="pretrain: adapts a text encoder"):
        load_config(None, ["task=image-classification", "pretrain.epochs=1"])
    with pytest.raises(LobellError, match="does not exist"):
        read_texts(tmp_path / "missing.txt", "text")
    table = tmp_path / "t.csv"
    table.write_text("body\nhello\n")
    with pytest.raises(LobellError, match="has no column 'text'"):
        read_texts(table, "text")
