"""One contract for every registered adapter (models/base.py), checked on tiny random models.

For each modality of the task registry: the adapter keeps the `Adapter` protocol, its layer map
puts every parameter in exactly one group with the new head last, a batch from the modality's own
dataset and loader comes out as one row per example, a saved folder reloads to the same outputs,
and (where it has one) the backbone/head split reproduces the full forward.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from audio_fixtures import make_tiny_wav2vec2

from lobell.config import load_config
from lobell.data.splits import Split
from lobell.models.base import Adapter, has_feature_split
from lobell.tasks import MODALITIES, TASKS, build_dataset, build_loader

VOCABULARY = ["<pad>", "<unk>", "|", "a", "b"]


def _inputs(modality: str) -> list:
    rng = np.random.default_rng(0)
    if modality in ("text", "seq2seq", "causal", "masked-text"):
        return ["a good film", "a bad film indeed", "good", "bad bad"]
    if modality in ("image", "detection"):
        return [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(4)]
    return [rng.standard_normal(16000 * (1 + i % 2) // 2).astype(np.float32) for i in range(4)]  # 0.5 s, 1 s


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    from conftest import make_tiny_bert

    from generation_fixtures import make_tiny_causal, make_tiny_t5

    wav2vec2, bert = str(make_tiny_wav2vec2(tmp_path_factory.mktemp("wav2vec2"))), str(make_tiny_bert(
        tmp_path_factory.mktemp("bert")))
    return {"seq2seq": str(make_tiny_t5(tmp_path_factory.mktemp("t5"))),
            "causal": str(make_tiny_causal(tmp_path_factory.mktemp("gpt2"))), "text": bert, "masked-text": bert,
            "image": "timm/test_vit", "audio": wav2vec2, "speech": wav2vec2, "detection": "torchvision/fasterrcnn"}


def _adapter(models, modality: str):
    task = next(name for name, (m, _) in TASKS.items() if m == modality)
    problem = TASKS[task][1]
    tiny = ["backbone=timm/test_resnet", "backbone_weights=random", "data.image_size=64", "fpn_channels=32"] \
        if problem == "detection" else []
    cfg = load_config(None, [f"task={task}", f"model={models[modality]}", "batch_size=2", "precision=fp32", *tiny])
    labels = VOCABULARY if problem == "ctc" else ["neg", "pos"]
    torch.manual_seed(0)
    adapter = MODALITIES[modality].build_adapter(cfg, problem, labels, weights=modality != "image")
    texts = problem in ("ctc", "seq2seq", "causal-lm", "masked-lm")  # transcripts, text to generate or to mask
    targets = np.array(["a b", "ab", "b", "a"], dtype=object) if texts else np.array([0, 1, 0, 1])
    if problem == "detection":  # images without boxes (a problem that collects its own outputs: problems/base.py)
        from lobell.problems import make_problem

        targets = make_problem(problem, labels).dummy_targets(4)
    return cfg, adapter, Split(_inputs(modality), targets, "test")


def _outputs(cfg, adapter, split) -> torch.Tensor:
    loader = build_loader(cfg, adapter, build_dataset(cfg, adapter, split), train=False)
    adapter.model.eval()
    with torch.inference_mode():
        outputs = [adapter.forward(adapter.model, batch) for batch in loader]
    if isinstance(outputs[0], list):  # detection: per image boxes, labels, scores -> (sum of boxes, sum of scores)
        images = [image for batch in outputs for image in batch]
        return torch.stack([torch.stack([o["boxes"].sum(), o["scores"].sum()]) for o in images])
    if outputs[0].ndim == 3 and adapter.modality != "speech":  # generators: logits per position -> two numbers
        outputs = [torch.stack([o.float().mean(dim=(1, 2)), o.float().std(dim=(1, 2))], 1) for o in outputs]
    return torch.cat(outputs)


@pytest.mark.parametrize("modality", sorted(MODALITIES))
def test_every_registered_adapter_keeps_the_contract(modality, models, tmp_path):
    cfg, adapter, split = _adapter(models, modality)
    assert isinstance(adapter, Adapter) and adapter.modality == modality
    names = [n for n, _ in adapter.model.named_parameters()]
    grouped = [n for group in adapter.layer_map.groups for n in group.param_names]
    assert sorted(grouped) == sorted(names) and len(grouped) == len(set(grouped))
    assert [g.is_head for g in adapter.layer_map.groups][-1] and len(adapter.layer_map) >= 3

    outputs = _outputs(cfg, adapter, split)
    assert len(outputs) == len(split) and torch.isfinite(outputs).all()
    if modality != "speech":  # speech: frames x (vocabulary + the frame mask channel)
        assert outputs.shape == (len(split), 2)

    adapter.save(tmp_path / "model", {"task": cfg.task, "labels": VOCABULARY if modality == "speech" else ["neg", "pos"]})
    reloaded = MODALITIES[modality].load_adapter(tmp_path / "model")
    assert isinstance(reloaded, Adapter) and type(reloaded) is type(adapter)
    torch.testing.assert_close(_outputs(cfg, reloaded, split), outputs, rtol=1e-4, atol=1e-5)

    if has_feature_split(adapter):
        batch = next(iter(build_loader(cfg, adapter, build_dataset(cfg, adapter, split), train=False)))
        with torch.inference_mode():
            split_forward = adapter.forward_head(adapter.model, adapter.forward_features(adapter.model, batch))
            torch.testing.assert_close(split_forward, adapter.forward(adapter.model, batch), rtol=1e-4, atol=1e-5)


def test_the_contract_refuses_what_lacks_a_member():
    class NoSave:
        modality, model, layer_map, name = "text", None, None, "x"

        def forward(self, model, batch):
            return batch

    assert not isinstance(NoSave(), Adapter)
