"""Does channels-last memory order speed up CNN training here? The measurement behind
`speed.channels_last: auto` (on for CUDA only unless this shows a CPU gain).

    python bench/channels_last.py           # ~3 minutes on 2 cores
    python bench/channels_last.py --quick   # under a minute; its numbers mean little

Training steps (forward, backward, SGD) and inference batches of torchvision MobileNetV2 and
ResNet-18 at batch 32, the default layout and channels-last alternating, median of the rounds.
"""

from __future__ import annotations

import sys
import time

import _common

MODELS = [("mobilenet_v2", 64), ("mobilenet_v2", 128), ("resnet18", 64), ("resnet18", 128)]


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    rounds, steps = (2, 2) if args.quick else (5, 5)
    print(_common.machine(), file=sys.stderr)
    print("| model | px | train img/s (default) | train img/s (channels-last) | ratio | eval img/s (default) | "
          "eval img/s (channels-last) | ratio |\n|---|---|---|---|---|---|---|---|")
    for arch, size in MODELS:
        seen = {False: [], True: []}
        for round_ in range(rounds):
            for channels_last in (False, True) if round_ % 2 == 0 else (True, False):
                seen[channels_last].append(measure(arch, size, channels_last, steps))
        default, last = (_median_pair(seen[k]) for k in (False, True))
        print(f"| {arch} | {size} | {default[0]:.1f} | {last[0]:.1f} | {last[0] / default[0]:.2f}x | "
              f"{default[1]:.1f} | {last[1]:.1f} | {last[1] / default[1]:.2f}x |", flush=True)


def measure(arch: str, size: int, channels_last: bool, steps: int, batch: int = 32) -> tuple[float, float]:
    """(training images/s, inference images/s) after one warm-up step each."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, num_classes=10)
    images, targets = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), targets).backward()
        optimizer.step()

    model.train()
    train = _rate(step, steps, batch)
    model.eval()
    with torch.inference_mode():
        evaluate = _rate(lambda: model(images), steps, batch)
    return train, evaluate


def _rate(work, steps: int, batch: int) -> float:
    work()
    started = time.perf_counter()
    for _ in range(steps):
        work()
    return steps * batch / (time.perf_counter() - started)


def _median_pair(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    middle = len(pairs) // 2
    return sorted(p[0] for p in pairs)[middle], sorted(p[1] for p in pairs)[middle]


if __name__ == "__main__":
    main()
