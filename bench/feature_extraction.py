"""Head-only training (feature extraction) for 10 epochs: lobell, which runs the frozen backbone once
per example and trains the head on cached features, vs a plain loop that runs it every epoch.

    python bench/feature_extraction.py           # the full run (docs/benchmarks.md; ~6 minutes on 2 cores)
    python bench/feature_extraction.py --quick   # checks the script in ~2 minutes; its numbers mean little

Two backbones with real weights: torchvision's ImageNet MobileNetV2 (64 px Fashion-MNIST, shipped
with lobell) and MiniLM-L6 (Rotten Tomatoes). Both sides train the same head with AdamW at the same
LR and batch size, evaluate the validation set every epoch and the test set at the end; the frozen
backbone runs in eval mode on both sides (batch norm keeps its statistics). lobell uses
augment=none: augmentation changes inputs every epoch and turns the cache off.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import _common

CONTENDERS = ["lobell-mobilenet_v2", "plain-mobilenet_v2", "lobell-minilm", "plain-minilm"]
SIZES = {"full": {"images": (3000, 500, 1000), "texts": (2000, 500, 1000)},
         "quick": {"images": (300, 100, 100), "texts": (200, 100, 100)}}
EPOCHS, IMAGE_SIZE = 10, 64
IMAGE_BATCH, IMAGE_LR = 64, 1e-3  # the vision demo's batch; lobell's recipe LR for an AdamW head
TEXT_BATCH, TEXT_LR = 32, 1e-3


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    if args.child:
        settings = json.loads((Path(args.work) / "settings.json").read_text())
        return _common.child_output(CHILDREN[args.child](settings))
    with _common.work_dir() as work:
        settings = prepare(Path(work), SIZES["quick" if args.quick else "full"])
        print(f"{_common.machine()}\nsettings: {json.dumps(settings)}", file=sys.stderr)
        results = _common.run_contenders(__file__, CONTENDERS, args.repeats, work, [])
    print(_common.table(results, [("wall_seconds", "wall time (s)", "{:.1f}"),
                                  ("cache_seconds", "cache build (s)", "{:.1f}"),
                                  ("cached_epoch_seconds", "cached epoch (s)", "{:.2f}"),
                                  ("peak_rss_mb", "peak RSS (MB)", "{:.0f}"),
                                  ("test_accuracy", "test accuracy", "{:.4f}")]))
    for model in ("mobilenet_v2", "minilm"):
        ours, theirs = (_median([r["wall_seconds"] for r in results if r["contender"] == f"{side}-{model}"])
                        for side in ("lobell", "plain"))
        print(f"{model}: lobell / plain wall time {ours / theirs:.2f}x (goal <= 0.2x: "
              f"{'met' if ours <= 0.2 * theirs else 'NOT met'})")


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def prepare(work: Path, sizes: dict) -> dict:
    """Image class folders and text files that both sides read."""
    import numpy as np
    import pandas as pd

    from lobell.data.image import save_image_folder

    images = {}
    with np.load(_common.ASSETS / "fashion_mnist" / "fashion_mnist_subset.npz") as arrays:
        names = [str(n) for n in arrays["class_names"]]
        for split, count in zip(("train", "validation", "test"), sizes["images"]):
            images[split] = str(work / "images" / split)
            save_image_folder(arrays[f"{split}_images"][:count], arrays[f"{split}_labels"][:count], names,
                              Path(images[split]))
    texts = {}
    for split, count in zip(("train", "validation", "test"), sizes["texts"]):
        frame = pd.read_csv(_common.ASSETS / "rotten_tomatoes" / f"{split}.csv")
        texts[split] = str(work / f"{split}.csv")
        frame.sample(n=min(count, len(frame)), random_state=0).to_csv(texts[split], index=False)
    settings = {"images": images, "texts": texts, "work": str(work)}
    (work / "settings.json").write_text(json.dumps(settings))
    return settings


def run_lobell(settings: dict, modality: str) -> dict:
    from lobell.config import load_config
    from lobell.training.runner import train

    files = settings["images" if modality == "image" else "texts"]
    common = [f"data.train={files['train']}", f"data.validation={files['validation']}", f"data.test={files['test']}",
              "strategy=feature-extraction", f"epochs={EPOCHS}", "early_stopping.patience=null", "recipe=false",
              "optimizer.name=adamw", "scheduler=cosine", "scheduler.warmup_ratio=0",
              f"output_dir={settings['work']}/lobell-{modality}-{time.time_ns()}"]
    if modality == "image":
        specific = ["task=image-classification", "model=torchvision/mobilenet_v2", f"data.image_size={IMAGE_SIZE}",
                    "augment=none", f"batch_size={IMAGE_BATCH}", f"optimizer.lr={IMAGE_LR}"]
    else:
        specific = ["task=text-classification", "model=sentence-transformers/all-MiniLM-L6-v2",
                    f"batch_size={TEXT_BATCH}", f"optimizer.lr={TEXT_LR}"]
    started = time.perf_counter()
    result = train(load_config(None, specific + common), quiet=True)
    wall = time.perf_counter() - started
    timing = result.metrics["timing"]
    return {"wall_seconds": wall, "test_accuracy": result.metrics["test"]["accuracy"],
            "cache_seconds": timing.get("feature_cache_seconds"),
            "cached_epoch_seconds": timing.get("cached_epoch_seconds")}


def run_plain_mobilenet(settings: dict) -> dict:
    """torchvision MobileNetV2 with its ImageNet weights, the features frozen (and in eval mode), a new
    output layer, ImageFolder with the weights' own resize/crop/normalise at 64 px."""
    import torch
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision.transforms import v2

    from lobell.models.hub import find_weights

    torch.manual_seed(0)
    started = time.perf_counter()
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(find_weights("torchvision", "mobilenet_v2", "torchvision/mobilenet_v2", None),
                                     weights_only=True))
    model.classifier[1] = torch.nn.Linear(model.classifier[1].in_features, 10)
    for parameter in model.features.parameters():
        parameter.requires_grad_(False)
    transform = v2.Compose([v2.Resize(256 * IMAGE_SIZE // 224, antialias=True), v2.CenterCrop(IMAGE_SIZE),
                            v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    folders = {split: torchvision.datasets.ImageFolder(path, transform) for split, path in settings["images"].items()}
    loaders = {split: DataLoader(data, batch_size=IMAGE_BATCH if split == "train" else 2 * IMAGE_BATCH,
                                 shuffle=split == "train") for split, data in folders.items()}
    head = list(model.classifier.parameters())
    accuracy = _plain_fit(model, loaders, lambda batch: (model(batch[0]), batch[1]), head, IMAGE_LR,
                          frozen=model.features)
    return {"wall_seconds": time.perf_counter() - started, "test_accuracy": accuracy}


def run_plain_minilm(settings: dict) -> dict:
    """transformers' MiniLM classifier with the encoder frozen (the new pooler and classifier train),
    shuffled batches padded per batch (DataCollatorWithPadding)."""
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from lobell.models.hub import resolve_pretrained

    torch.manual_seed(0)
    started = time.perf_counter()
    path = resolve_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    head = [*model.bert.pooler.parameters(), *model.classifier.parameters()]
    for parameter in model.bert.parameters():
        parameter.requires_grad_(False)
    for parameter in head:
        parameter.requires_grad_(True)
    frames = {split: pd.read_csv(file) for split, file in settings["texts"].items()}
    labels = sorted(frames["train"].label.unique())
    collate = DataCollatorWithPadding(tokenizer)
    loaders = {}
    for split, frame in frames.items():
        encoded = tokenizer(frame.text.tolist(), truncation=True)
        rows = [{"input_ids": i, "attention_mask": m, "labels": labels.index(label)}
                for i, m, label in zip(encoded["input_ids"], encoded["attention_mask"], frame.label)]
        loaders[split] = DataLoader(rows, batch_size=TEXT_BATCH if split == "train" else 2 * TEXT_BATCH,
                                    shuffle=split == "train", collate_fn=collate)

    def forward(batch):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]

    accuracy = _plain_fit(model, loaders, forward, head, TEXT_LR, frozen=model.bert.encoder)
    return {"wall_seconds": time.perf_counter() - started, "test_accuracy": accuracy}


def _plain_fit(model, loaders: dict, forward, head, lr: float, frozen) -> float:
    """EPOCHS of AdamW + cosine on the head, validation accuracy every epoch; the test accuracy."""
    import torch

    optimizer = torch.optim.AdamW(head, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS * len(loaders["train"]))

    def accuracy(loader) -> float:
        model.eval()
        correct = total = 0
        with torch.inference_mode():
            for batch in loader:
                logits, targets = forward(batch)
                correct, total = correct + int((logits.argmax(-1) == targets).sum()), total + len(targets)
        return correct / total

    for _ in range(EPOCHS):
        model.train()
        frozen.eval()
        for batch in loaders["train"]:
            logits, targets = forward(batch)
            torch.nn.functional.cross_entropy(logits, targets).backward()
            torch.nn.utils.clip_grad_norm_(head, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        accuracy(loaders["validation"])
    return accuracy(loaders["test"])


CHILDREN = {"lobell-mobilenet_v2": lambda s: run_lobell(s, "image"), "plain-mobilenet_v2": run_plain_mobilenet,
            "lobell-minilm": lambda s: run_lobell(s, "text"), "plain-minilm": run_plain_minilm}

if __name__ == "__main__":
    main()
