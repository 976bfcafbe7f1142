"""lobell's default recipe vs the Hugging Face Trainer (as its text-classification guide sets it up)
vs a plain PyTorch loop: the real packaged MiniLM on real Rotten Tomatoes reviews.

    python bench/text_vs_hf.py            # the full run (docs/benchmarks.md; ~8-10 minutes on 2 cores)
    python bench/text_vs_hf.py --quick    # checks the script in ~3 minutes; its numbers mean little

lobell decides epochs, batch size and learning rates from its recipe; the Trainer and the plain
loop get the same epochs, batch size and warmup/decay schedule, and the recipe's LR for the
pre-trained layers (lobell's new head trains at lr / backbone_lr_scale). Each contender runs in a
fresh child process; the timed span is everything a user waits for after imports: loading the
model, tokenising, training (with per-epoch evaluation and checkpoints where the tool does them),
and predicting the test set.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import _common

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CONTENDERS = ["lobell", "hf-trainer", "plain-pytorch"]
# 2,000 training examples: lobell's recipe then fine-tunes every layer (full, batch 32, 3 epochs).
SIZES = {"full": {"train": 2000, "validation": 300, "test": None, "epochs": None},
         "quick": {"train": 300, "validation": 100, "test": 200, "epochs": 1}}


def main() -> None:
    parser = _common.parser(__doc__.splitlines()[0])
    for split in ("train", "validation", "test"):
        parser.add_argument(f"--{split}", type=int, help=f"{split} examples (default: full {SIZES['full'][split]})")
    args = parser.parse_args()
    if args.child:
        return _common.child_output(CHILDREN[args.child](json.loads((Path(args.work) / "settings.json").read_text())))
    sizes = dict(SIZES["quick" if args.quick else "full"])
    sizes.update({split: getattr(args, split) for split in ("train", "validation", "test") if getattr(args, split)})
    with _common.work_dir() as work:
        settings = prepare(Path(work), sizes)
        print(f"{_common.machine()}\nsettings: {json.dumps(settings)}", file=sys.stderr)
        results = _common.run_contenders(__file__, CONTENDERS, args.repeats, work, [])
    print(_common.table(results, [("wall_seconds", "wall time (s)", "{:.1f}"),
                                  ("train_samples_per_second", "train samples/s (end to end)", "{:.1f}"),
                                  ("peak_rss_mb", "peak RSS (MB)", "{:.0f}"),
                                  ("test_accuracy", "test accuracy", "{:.4f}")],
                        anchor="hf-trainer", ratio_of=("wall_seconds", "train_samples_per_second", "peak_rss_mb")))
    lobell = _median_of(results, "lobell")
    plain = _median_of(results, "plain-pytorch")
    print(f"\nlobell / plain-pytorch: wall {lobell['wall_seconds'] / plain['wall_seconds']:.2f}x")
    hf = _median_of(results, "hf-trainer")
    points = 100 * (lobell["test_accuracy"] - hf["test_accuracy"])
    goal = lobell["wall_seconds"] <= 0.5 * hf["wall_seconds"] and points >= -1
    print(f"goal (lobell wall <= 0.5x the Trainer's, test accuracy no worse than 1 point below): "
          f"{'met' if goal else 'NOT met'} ({lobell['wall_seconds'] / hf['wall_seconds']:.2f}x, {points:+.1f} points)")


def _median_of(results: list[dict], name: str) -> dict:
    rows = [r for r in results if r["contender"] == name]
    return {key: sorted(r[key] for r in rows)[len(rows) // 2] for key in ("wall_seconds", "test_accuracy")}


def prepare(work: Path, sizes: dict) -> dict:
    """Subset files every contender reads, and the recipe's settings the anchors copy."""
    import pandas as pd

    files = {}
    for split in ("train", "validation", "test"):
        frame = pd.read_csv(_common.ASSETS / "rotten_tomatoes" / f"{split}.csv")
        if sizes[split] is not None:
            frame = frame.sample(n=min(sizes[split], len(frame)), random_state=0)
        files[split] = str(work / f"{split}.csv")
        frame.to_csv(files[split], index=False)
    overrides = lobell_overrides(files, sizes["epochs"])
    cfg = resolved_recipe(overrides)
    lr = cfg.optimizer.lr * (1.0 if cfg.strategy.name == "feature-extraction" else cfg.strategy.backbone_lr_scale)
    settings = {"files": files, "overrides": overrides, "strategy": cfg.strategy.name, "epochs": cfg.epochs,
                "batch_size": cfg.batch_size, "lr": lr, "head_lr": cfg.optimizer.lr,
                "warmup_ratio": cfg.scheduler.warmup_ratio, "weight_decay": cfg.optimizer.weight_decay,
                "train_examples": len(pd.read_csv(files["train"]))}
    (work / "settings.json").write_text(json.dumps(settings))
    return settings


def lobell_overrides(files: dict, epochs: int | None) -> list[str]:
    overrides = ["task=text-classification", f"model={MINILM}", f"data.train={files['train']}",
                 f"data.validation={files['validation']}", f"data.test={files['test']}"]
    return overrides + ([f"epochs={epochs}"] if epochs else [])


def resolved_recipe(overrides: list[str]):
    """The config lobell's recipe resolves for these files (structure only: no weights are loaded)."""
    from lobell import recipe
    from lobell.config import load_config
    from lobell.tasks import build_adapter, load_task_splits

    cfg = load_config(None, overrides)
    splits = load_task_splits(cfg, "text", "classification")
    adapter = build_adapter(cfg, "text", "classification", splits.labels, weights=False)
    return recipe.apply(cfg, recipe.decide(cfg, recipe.profile_of(cfg, splits, adapter)))


def run_lobell(settings: dict) -> dict:
    from lobell.config import load_config
    from lobell.training.runner import train

    started = time.perf_counter()
    run_dir = Path(settings["files"]["train"]).parent / f"lobell-run-{time.time_ns()}"
    result = train(load_config(None, settings["overrides"] + [f"output_dir={run_dir}"]), quiet=True)
    wall = time.perf_counter() - started
    epochs = len((result.run_dir / "metrics.jsonl").read_text().splitlines()) - 1  # early stopping may end it sooner
    return _result(settings, wall, result.metrics["test"]["accuracy"], epochs)


def _load(settings: dict):
    import pandas as pd
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lobell.models.hub import resolve_pretrained

    path = resolve_pretrained(MINILM)
    frames = {split: pd.read_csv(file) for split, file in settings["files"].items()}
    labels = sorted(frames["train"].label.unique())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    data = {}
    for split, frame in frames.items():
        encoded = tokenizer(frame.text.tolist(), truncation=True)
        targets = [labels.index(label) for label in frame.label]
        data[split] = [{"input_ids": ids, "attention_mask": mask, "labels": target}
                       for ids, mask, target in zip(encoded["input_ids"], encoded["attention_mask"], targets)]
    return tokenizer, model, data


def run_hf_trainer(settings: dict) -> dict:
    """The Trainer as the transformers text-classification guide writes it (DataCollatorWithPadding,
    evaluation and a checkpoint every epoch, the best model loaded at the end), without the Hub."""
    import numpy as np
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    started = time.perf_counter()
    tokenizer, model, data = _load(settings)
    steps = settings["epochs"] * math.ceil(len(data["train"]) / settings["batch_size"])
    arguments = TrainingArguments(
        output_dir=str(Path(settings["files"]["train"]).parent / f"hf-run-{time.time_ns()}"),
        learning_rate=settings["lr"], per_device_train_batch_size=settings["batch_size"],
        per_device_eval_batch_size=2 * settings["batch_size"], num_train_epochs=settings["epochs"],
        weight_decay=settings["weight_decay"], warmup_steps=math.ceil(settings["warmup_ratio"] * steps),
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="accuracy",
        report_to="none", seed=0, disable_tqdm=True)

    def accuracy(prediction) -> dict:
        return {"accuracy": float((np.argmax(prediction.predictions, axis=1) == prediction.label_ids).mean())}

    trainer = Trainer(model=model, args=arguments, train_dataset=data["train"], eval_dataset=data["validation"],
                      processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=accuracy)
    trainer.train()
    test = trainer.predict(data["test"])
    return _result(settings, time.perf_counter() - started, accuracy(test)["accuracy"])


def run_plain(settings: dict) -> dict:
    """The loop a PyTorch user writes: shuffled batches padded per batch, AdamW, linear warmup and decay."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    torch.manual_seed(0)
    started = time.perf_counter()
    tokenizer, model, data = _load(settings)
    collate = DataCollatorWithPadding(tokenizer)
    loader = DataLoader(data["train"], batch_size=settings["batch_size"], shuffle=True, collate_fn=collate)
    steps = settings["epochs"] * len(loader)
    warmup = math.ceil(settings["warmup_ratio"] * steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    def linear(step: int) -> float:  # warmup, then linear decay to 0 (the Trainer's and lobell's default)
        return step / max(warmup, 1) if step < warmup else max(0.0, (steps - step) / max(steps - warmup, 1))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear)
    model.train()
    for _ in range(settings["epochs"]):
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    model.eval()
    correct = 0
    with torch.inference_mode():
        for batch in DataLoader(data["test"], batch_size=2 * settings["batch_size"], collate_fn=collate):
            correct += int((model(**batch).logits.argmax(-1) == batch["labels"]).sum())
    return _result(settings, time.perf_counter() - started, correct / len(data["test"]))


def _result(settings: dict, wall: float, test_accuracy: float, epochs: int | None = None) -> dict:
    samples = settings["train_examples"] * (epochs or settings["epochs"])
    return {"wall_seconds": wall, "train_samples_per_second": samples / wall, "test_accuracy": test_accuracy}


CHILDREN = {"lobell": run_lobell, "hf-trainer": run_hf_trainer, "plain-pytorch": run_plain}

if __name__ == "__main__":
    main()
