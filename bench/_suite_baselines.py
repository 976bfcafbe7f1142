"""The recipe suite's baselines: the notes' plain loop (text and CNN) and the HF Trainer as its docs show.

Each returns the test metric and the wall time a user waits for after imports (load, tokenise or
read images, train, predict the test set). `deadline` (seconds, a time budget) stops training at
the first step past it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

TEXT_BATCH, IMAGE_BATCH, MAX_LENGTH = 16, 32, 64


def score(metric: str, logits: np.ndarray, targets: np.ndarray) -> float:
    """The headline metric, computed by scikit-learn the same way for every contender."""
    from sklearn import metrics as skm

    if metric == "r2":
        return float(skm.r2_score(targets, logits.reshape(len(logits), -1)[:, 0]))
    if logits.ndim == 2 and targets.ndim == 2:  # multi-label
        return float(skm.f1_score(targets.astype(int), (logits >= 0).astype(int), average="macro", zero_division=0))
    predictions = logits.argmax(axis=1)
    if metric == "f1_macro":
        return float(skm.f1_score(targets, predictions, average="macro", zero_division=0))
    return float(skm.accuracy_score(targets, predictions))


def _text_data(spec: dict, model_path: str):
    import pandas as pd
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    frames = {split: pd.read_csv(file) for split, file in spec["files"].items()}
    kind = spec["task"].removeprefix("text-")
    if kind == "regression":
        labels, extra = None, {"num_labels": 1, "problem_type": "regression"}
    elif kind == "multi-label":
        labels = spec["labels"]
        extra = {"num_labels": len(labels), "problem_type": "multi_label_classification"}
    else:
        labels = sorted(frames["train"].label.unique())
        extra = {"num_labels": len(labels)}
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, **extra)

    def target(value):
        if kind == "regression":
            return float(value)
        if kind == "multi-label":
            return [float(label in str(value).split("|")) for label in labels]
        return labels.index(value)

    data = {}
    for split, frame in frames.items():
        encoded = tokenizer(frame.text.astype(str).tolist(), truncation=True, max_length=MAX_LENGTH)
        data[split] = [{"input_ids": i, "attention_mask": m, "labels": target(v)}
                       for i, m, v in zip(encoded["input_ids"], encoded["attention_mask"], frame.label)]
    return tokenizer, model, data


def plain_text(spec: dict, model_path: str, lr: float, epochs: int, deadline: float | None = None) -> dict:
    """The transformers 'train in native PyTorch' loop: AdamW on every layer, linear decay, fixed epochs."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding, get_scheduler

    torch.manual_seed(0)
    started = time.perf_counter()
    tokenizer, model, data = _text_data(spec, model_path)
    collate = DataCollatorWithPadding(tokenizer)
    loader = DataLoader(data["train"], batch_size=TEXT_BATCH, shuffle=True, collate_fn=collate)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=epochs * len(loader))
    steps = _fit(model, loader, lambda batch: model(**batch).loss, optimizer, schedule, epochs, started, deadline)
    model.eval()
    logits, targets = [], []
    with torch.inference_mode():
        for batch in DataLoader(data["test"], batch_size=2 * TEXT_BATCH, collate_fn=collate):
            logits.append(model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float().numpy())
            targets.append(batch["labels"].numpy())
    return {"metric": score(spec["metric"], np.concatenate(logits), np.concatenate(targets)),
            "wall_seconds": time.perf_counter() - started, "steps": steps, "precision": "fp32"}


def _fit(model, loader, loss_of, optimizer, schedule, epochs: int, started: float, deadline: float | None) -> int:
    steps = 0
    model.train()
    for _ in range(epochs):
        for batch in loader:
            if deadline is not None and time.perf_counter() - started > deadline:
                return steps
            loss_of(batch).backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            optimizer.zero_grad()
            steps += 1
    return steps


def hf_trainer(spec: dict, model_path: str, epochs: int, work: Path) -> dict:
    """The Trainer as the text-classification guide writes it: lr 2e-5, batch 16, weight decay 0.01,
    evaluation and a checkpoint every epoch, the best model loaded at the end."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    started = time.perf_counter()
    tokenizer, model, data = _text_data(spec, model_path)
    arguments = TrainingArguments(output_dir=str(work / f"hf-{time.time_ns()}"), learning_rate=2e-5,
                                  per_device_train_batch_size=TEXT_BATCH, per_device_eval_batch_size=TEXT_BATCH,
                                  num_train_epochs=epochs, weight_decay=0.01, eval_strategy="epoch",
                                  save_strategy="epoch", load_best_model_at_end=True, report_to="none", seed=0,
                                  disable_tqdm=True, use_cpu=True)
    trainer = Trainer(model=model, args=arguments, train_dataset=data["train"], eval_dataset=data["validation"],
                      processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    test = trainer.predict(data["test"])
    return {"metric": score(spec["metric"], np.asarray(test.predictions), np.asarray(test.label_ids)),
            "wall_seconds": time.perf_counter() - started, "steps": trainer.state.global_step, "precision": "fp32"}


def plain_cnn(spec: dict, weights: str, lr: float, epochs: int, image_size: int,
              deadline: float | None = None) -> dict:
    """The notes' CNN loop: torchvision MobileNetV2 with its weights, a new last layer, SGD lr momentum 0.9
    on every layer at a constant LR, fixed epochs, images resized and ImageNet-normalised, no augmentation."""
    import torch
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision import transforms

    torch.manual_seed(0)
    started = time.perf_counter()
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(weights, weights_only=True))
    transform = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor(),
                                    transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    folders = {split: torchvision.datasets.ImageFolder(path, transform, allow_empty=True) for split, path in spec["files"].items()}
    model.classifier[1] = torch.nn.Linear(model.classifier[1].in_features, len(folders["train"].classes))
    loader = DataLoader(folders["train"], batch_size=IMAGE_BATCH, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    steps = _fit(model, loader, lambda batch: torch.nn.functional.cross_entropy(model(batch[0]), batch[1]),
                 optimizer, None, epochs, started, deadline)
    model.eval()
    logits, targets = [], []
    with torch.inference_mode():
        for images, labels in DataLoader(folders["test"], batch_size=2 * IMAGE_BATCH):
            logits.append(model(images).numpy())
            targets.append(labels.numpy())
    return {"metric": score(spec["metric"], np.concatenate(logits), np.concatenate(targets)),
            "wall_seconds": time.perf_counter() - started, "steps": steps, "precision": "fp32"}


def steps_per_epoch(n_train: int, batch: int) -> int:
    return math.ceil(n_train / batch)
