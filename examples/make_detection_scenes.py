"""Write a small real-image detection set: Fashion-MNIST items on varied backgrounds, with their boxes.

    python examples/make_detection_scenes.py                      # data/scenes/: COCO, 240 + 60 images, 96 px
    python examples/make_detection_scenes.py --format yolo --out data/scenes-yolo --size 128

See docs/detection.md.
"""

from __future__ import annotations

import argparse

from lobell.data.detection.scenes import make_scenes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/scenes", help="output folder")
    parser.add_argument("--format", choices=["coco", "yolo"], default="coco")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--train", type=int, default=240, help="training images")
    parser.add_argument("--validation", type=int, default=60, help="validation images")
    parser.add_argument("--test", type=int, default=60, help="test images")
    parser.add_argument("--classes", nargs="*", default=None, help="Fashion-MNIST class names (default: all ten)")
    parser.add_argument("--max-objects", type=int, default=3)
    args = parser.parse_args()
    counts = {"train": args.train, "validation": args.validation, "test": args.test}
    written = make_scenes(args.out, {k: v for k, v in counts.items() if v}, size=args.size, classes=args.classes,
                          max_objects=args.max_objects, format=args.format)
    for split, path in written.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
