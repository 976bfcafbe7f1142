"""The Python API: TextClassifier in a few lines, freezing methods, save and load."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from lobell import LobellError, TextClassifier, load

pytestmark = pytest.mark.usefixtures("in_tmp_dir")  # default output_dir is runs/ under the cwd

FAST = {"optimizer__lr": 3e-3, "strategy__name": "full", "strategy__backbone_lr_scale": 1.0, "scheduler__warmup_ratio": 0.0,
        "batch_size": 16, "precision": "fp32", "quiet": True}


@pytest.fixture()
def data(sentiment_files):
    train, val = pd.read_csv(sentiment_files["train"]), pd.read_csv(sentiment_files["validation"])
    return train.text.tolist(), train.label.tolist(), val.text.tolist(), val.label.tolist()


def test_fit_predict_save_load(tiny_bert, data, tmp_path):
    clf = TextClassifier(str(tiny_bert), labels=["neg", "pos"], output_dir=str(tmp_path / "run"))
    metrics = clf.fit(*data, epochs=4, **FAST)
    assert metrics["validation"]["accuracy"] > 0.85
    predicted, probs = clf.predict(["the film was great", "the plot was awful"], return_probabilities=True)
    assert predicted == ["pos", "neg"] and probs.shape == (2, 2)
    clf.save(tmp_path / "saved")
    again = load(tmp_path / "saved")
    assert isinstance(again, TextClassifier)
    assert again.predict(["the film was great", "the plot was awful"]) == predicted


def test_integer_labels_and_prepare_data(tiny_bert, data, tmp_path):
    texts, labels = data[0], [1 if y == "pos" else 0 for y in data[1]]
    clf = TextClassifier(str(tiny_bert), num_classes=2, output_dir=str(tmp_path / "run"))
    train, val = clf.prepare_data(texts, labels, val_fraction=0.2)
    assert len(val) == 80 and len(train) == 320
    clf.train(train, val, num_epochs=4, **FAST)
    assert clf.predict(["a great movie"]) == [1]


def test_freeze_backbone_trains_only_the_head(tiny_bert, data, tmp_path):
    clf = TextClassifier(str(tiny_bert), labels=["neg", "pos"], output_dir=str(tmp_path / "run"))
    clf.freeze_backbone()
    groups = clf.layer_groups()
    assert [g["trainable"] for g in groups] == [False] * (len(groups) - 1) + [True]
    before = {k: v.clone() for k, v in clf.adapter.model.state_dict().items()}
    clf.fit(*data, epochs=1, **FAST)
    after = clf.adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("classifier."))
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def test_freeze_to_and_unfreeze_all(tiny_bert):
    clf = TextClassifier(str(tiny_bert), num_classes=2)
    clf.freeze_to(-2)
    assert [g["trainable"] for g in clf.layer_groups()] == [False, False, False, True, True]
    clf.unfreeze_all()
    assert all(g["trainable"] for g in clf.layer_groups())
    with pytest.raises(LobellError, match="must be in -5..4"):
        clf.freeze_to(7)


def test_unknown_labels_are_refused(tiny_bert, data):
    clf = TextClassifier(str(tiny_bert), labels=["neg", "pos"])
    with pytest.raises(LobellError, match=r"label\(s\) \['meh'\]"):
        clf.fit(["a", "b"], ["neg", "meh"], ["a"], ["pos"])
    with pytest.raises(LobellError, match="2 texts but 1 labels"):
        clf.fit(["a", "b"], ["neg"], ["a"], ["pos"])


def test_fit_accepts_a_custom_loss_function(tiny_bert, data, tmp_path):
    calls = []

    def loss_fn(logits, targets):
        calls.append(len(targets))
        return torch.nn.functional.cross_entropy(logits, targets)

    clf = TextClassifier(str(tiny_bert), labels=["neg", "pos"], output_dir=str(tmp_path / "run"))
    clf.fit(*data, epochs=1, loss_fn=loss_fn, **FAST)
    assert sum(calls) >= 400, "the custom loss saw every training example"


def test_bert_fine_tuner_keeps_the_notes_signature(tiny_bert, data, tmp_path):
    import inspect

    import lobell
    from lobell import BERTFineTuner

    assert "BERTFineTuner" in lobell.__all__ and issubclass(BERTFineTuner, TextClassifier)
    assert list(inspect.signature(BERTFineTuner.prepare_data).parameters)[:3] == ["self", "texts", "labels"]
    assert inspect.signature(BERTFineTuner.train).parameters["num_epochs"].default == 3
    tuner = BERTFineTuner(model_name=str(tiny_bert), num_classes=2, output_dir=str(tmp_path / "run"))
    train, val = tuner.prepare_data(data[0], [1 if y == "pos" else 0 for y in data[1]])
    metrics = tuner.train(train, val, num_epochs=3, **FAST)
    assert metrics["validation"]["accuracy"] > 0.85 > metrics["before"]["accuracy"]
    assert tuner.predict(["a great movie", "a dull movie"]) == [1, 0]
