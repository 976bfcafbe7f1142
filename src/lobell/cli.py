"""The `lobell` command: parse arguments, load the config, call the same functions as the API."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from lobell.errors import LobellError

STARTED_AT = "LOBELL_STARTED_AT"  # the launching command's start time, for time_budget


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # time_budget counts a command from its process's start (Python's imports take seconds); a call
    # from Python, main([...]), from now.
    args.started_at = _process_start() if argv is None else time.time()
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return args.run(args) or 0
    except LobellError as exc:
        if args.debug:
            raise
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # always one line, whatever the message holds
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lobell layers ... | head`: the reader left; nothing to report
        sys.stderr.close()
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lobell", description="Fine-tune pre-trained models: Layers, Optimizer, "
                                     "Batch size, Epochs, Loss, Learning rate.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = parser.add_subparsers(dest="command")

    def command(name: str, run, help_text: str, config: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(run=run)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        if config:
            p.add_argument("items", nargs="*", metavar="CONFIG.yaml|KEY=VALUE",
                           help="an optional YAML config followed by dotted overrides, e.g. optimizer.lr=3e-5")
        return p

    p = command("train", _train, "fine-tune a model as the config says", config=True)
    p.add_argument("--quiet", action="store_true", help="print only the final results")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="train on N processes through `accelerate launch` (GPUs if present, else CPU/gloo)")
    command("validate", _validate, "check a config (keys, values, data columns) without loading weights", config=True)
    command("layers", _layers, "print the model's layer map: groups, parameter counts, what trains", config=True)
    p = command("lr-find", _lr_find, "LR range test on the first stage's groups: plot and suggested optimizer.lr",
                config=True)
    p.add_argument("--steps", type=int, default=100, help="batches to sweep over (default 100)")
    p.add_argument("--plot", type=Path, default=None, help="where to save the plot (default: OUTPUT_DIR/lr_find.png)")
    command("recipe", _recipe, "print the six LO-BELL choices lobell would make for this config and data, and why",
            config=True)
    _predict_arguments(command("predict", _predict, "predict with a finished run's model"))
    p = command("evaluate", _evaluate, "print a finished run's metrics on a labelled data file, as JSON")
    p.add_argument("run_dir", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = command("demo", _demo, "run a built-in example on real data and real pre-trained weights "
                "(text: MiniLM on Rotten Tomatoes reviews; vision: MobileNetV2 on Fashion-MNIST)")
    p.add_argument("items", nargs="*", metavar="[NAME] KEY=VALUE", help="the demo's name (default: text), then overrides")
    p.add_argument("--quiet", action="store_true")
    p = command("report", _report, "(re)build a finished run's report.html and model card (model/README.md)")
    p.add_argument("run_dir", type=Path)
    p = command("export", _export, "write a finished run's model as ONNX (checked against PyTorch) or safetensors")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--format", required=True, choices=("onnx", "safetensors"), dest="export_format")
    p.add_argument("--output", type=Path, default=None, help="the file to write (default: RUN_DIR/export/model.FORMAT)")
    p = command("compare", _compare, "train each strategy (x seeds) on the same data; write comparison.html/.json",
                config=True)
    p.add_argument("--strategies", required=True, help="comma-separated, e.g. feature-extraction,gradual,full")
    p.add_argument("--seeds", type=int, default=1, help="runs per strategy, seeds seed..seed+N-1 (default 1)")
    p.add_argument("--quiet", action="store_true", help="print only each run's results and the comparison")
    p = command("sweep", _sweep, "search hyperparameters on Optuna: KEY=v1,v2,... lists values (grid search when "
                "every searched key lists them), KEY=low..high is a range (TPE); every trial a run folder, then "
                "sweep.html/.json with the best config; re-running the same command continues a killed sweep",
                config=True)
    p.add_argument("--trials", type=int, default=None, metavar="N", help="trials in all, earlier runs of this "
                   "sweep included (default: every grid point, or 10 with ranges)")
    p.add_argument("--quiet", action="store_true", help="print only each trial's results and the best config")
    _serve_arguments(command("serve", _serve, "serve a finished run's model over HTTP: POST /predict (batched), "
                             "/info, /health, and a page at / to try it"))
    return parser


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    """`lobell predict`'s options."""
    p.add_argument("run_dir", type=Path)
    p.add_argument("input", type=Path, help="a .csv/.jsonl/.parquet file with the run's input column, or (image "
                   "tasks) a folder of images, or (audio tasks) a folder of audio files or one audio file")
    p.add_argument("--output", type=Path, default=None, help="where to write the predictions: .jsonl for JSON "
                   "lines, else CSV (default: CSV on stdout)")
    p.add_argument("--threshold", type=float, default=None, help="object detection: the lowest box score kept "
                   "(default 0.5)")
    p.add_argument("--draw", type=Path, default=None, help="object detection: write each image with its boxes "
                   "into this folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    """`lobell serve`'s options (docs/serve.md)."""
    p.add_argument("run_dir", type=Path)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port, printed)")
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default 1)")
    p.add_argument("--max-batch", type=int, default=32, help="inputs per forward pass (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="how long a batch waits for more requests (default 10; 0: only what queued meanwhile)")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body (default 16 MB)")
    p.add_argument("--max-items", type=int, default=256, help="most inputs in one request (default 256)")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="int8 dynamic quantization of Linear layers; its accuracy change on the run's validation "
                        "examples is printed at start-up")


def _split_items(items: list[str]) -> tuple[str | None, list[str]]:
    path = None
    if items and "=" not in items[0]:
        path, items = items[0], items[1:]
    bad = [item for item in items if "=" not in item]
    if bad:
        raise LobellError(f"'{bad[0]}' is not KEY=VALUE; only the first argument may be a config file")
    return path, items


def _config(args):
    from lobell.config import load_config

    path, overrides = _split_items(args.items)
    return load_config(path, overrides)


def _train(args) -> int:
    started_at = float(os.environ.get(STARTED_AT) or args.started_at)  # launched processes: the launcher's
    if args.processes and args.processes > 1:
        from lobell.launch import launch

        return launch(args.processes, _relaunch_args(args), {STARTED_AT: repr(started_at)})
    if args.resume is not None:
        from lobell.config import load_config

        path, overrides = _split_items(args.items)
        if path or overrides:
            raise LobellError("--resume continues the run as it was configured; give no config or overrides with it")
        config_path = args.resume / "config.yaml"
        if not config_path.is_file():
            raise LobellError(f"run folder '{args.resume}' has no config.yaml: it is not a lobell run folder")
        cfg = load_config(config_path, [f"output_dir={args.resume}"])
        from lobell.training.runner import train

        train(cfg, quiet=args.quiet, resume=True, started_at=started_at)
        return 0
    cfg = _config(args)
    from lobell.training.runner import train

    train(cfg, quiet=args.quiet, started_at=started_at)
    return 0


def _process_start() -> float:
    import psutil  # Accelerate's own dependency

    return psutil.Process().create_time()


def _relaunch_args(args) -> list[str]:
    """The same `lobell train` command line, minus --processes, for each launched process."""
    relaunched = ["train", *args.items]
    if args.quiet:
        relaunched.append("--quiet")
    if args.resume is not None:
        relaunched += ["--resume", str(args.resume)]
    return relaunched


def _validate(args) -> int:
    cfg = _config(args)  # config errors answer before torch is imported
    from lobell.validate import validate_run_config

    for line in validate_run_config(cfg):
        print(line)
    return 0


def _lr_find(args) -> int:
    cfg = _config(args)
    from lobell.training.lr_find import find_lr

    finding, path = find_lr(cfg, steps=args.steps, output=args.plot)
    print(f"suggested optimizer.lr={finding.suggestion:.2e} ({finding.rule}); swept {finding.lrs[0]:.1e}.."
          f"{finding.lrs[-1]:.1e} over {len(finding.lrs)} steps; plot: {path}")
    return 0


def _recipe(args) -> int:
    cfg = _config(args)  # config errors answer before torch is imported
    from lobell.validate import describe_recipe

    print(describe_recipe(cfg))
    return 0


def _layers(args) -> int:
    cfg = _config(args)  # config errors answer before torch is imported
    from lobell.validate import describe_layers

    print(describe_layers(cfg))
    return 0


def _predict(args) -> int:
    from lobell.console import Reporter
    from lobell.predict import Predictor, read_prediction_inputs
    from lobell.run_dir import atomic_write_text

    predictor = Predictor.from_run(args.run_dir)
    inputs, frame = read_prediction_inputs(predictor, args.input)
    detection = predictor.problem == "detection"
    if (args.draw is not None or args.threshold is not None) and not detection:
        raise LobellError("--threshold and --draw apply to object-detection runs")
    threshold = args.threshold if args.threshold is not None else (0.5 if detection else None)
    table = predictor.predict_table(inputs, Reporter(args.quiet), threshold=threshold)
    table.insert(0, predictor.input_column(), frame[predictor.input_column()].tolist())
    if args.draw is not None:
        from lobell.data.detection.draw import draw_all

        count = draw_all(table, predictor.input_column(), predictor.labels, args.draw)
        print(f"drew {count} image(s) with their boxes into {args.draw}", file=sys.stderr)
    jsonl = args.output is not None and args.output.suffix == ".jsonl"
    text = table.to_json(orient="records", lines=True) if jsonl else table.to_csv(index=False)
    if args.output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(args.output, text)
        print(f"wrote {len(table)} predictions to {args.output}", file=sys.stderr)
    return 0


def _evaluate(args) -> int:
    from lobell.console import Reporter
    from lobell.predict import Predictor

    metrics = Predictor.from_run(args.run_dir).evaluate_file(args.data, Reporter(args.quiet))
    print(json.dumps(metrics, indent=2))
    return 0


def _demo(args) -> int:
    from lobell.demo import run_demo

    name, overrides = _split_items(args.items)
    run_demo(name or "text", overrides, quiet=args.quiet)
    return 0


def _report(args) -> int:
    from lobell.report import write_model_card, write_report

    if (args.run_dir / "model").is_dir():
        print(f"model card: {write_model_card(args.run_dir)}")
    print(f"report: {write_report(args.run_dir)}")
    return 0


def _export(args) -> int:
    from lobell.export import export_run

    result = export_run(args.run_dir, args.export_format, args.output)
    print(f"wrote {result.path}")
    if result.max_abs_difference is not None:
        print(f"dynamic axes: {', '.join(result.dynamic_axes)}; onnxruntime vs PyTorch on {result.inputs_checked} "
              f"real inputs, batches of several sizes: max abs difference {result.max_abs_difference:.3e}")
    return 0


def _serve(args) -> int:
    try:
        from lobell.serve import ServeSettings, serve
    except ModuleNotFoundError as exc:  # the `serve` extra: fastapi, uvicorn, python-multipart
        raise LobellError(f"lobell serve needs {exc.name}, which is not installed: pip install 'lobell[serve]'") \
            from None
    serve(ServeSettings(str(args.run_dir), args.host, args.port, args.workers, args.max_batch, args.max_wait_ms,
                        args.max_body_mb, args.max_items, args.quantize))
    return 0


def _compare(args) -> int:
    from lobell.compare import compare

    strategies = [name.strip() for name in args.strategies.split(",") if name.strip()]
    result = compare(_config(args), strategies, seeds=args.seeds, quiet=args.quiet)
    print(f"comparison: {result.html_path} and {result.json_path}")
    return 0



def _sweep(args) -> int:
    from lobell.sweep import sweep

    path, items = _split_items(args.items)
    result = sweep(path, items, trials=args.trials, quiet=args.quiet)
    best = result.summary["best"]
    if best:
        print(f"best: trial {best['number']}, validation {result.summary['monitor']} {best['value']:.4f}, with "
              f"{' '.join(best['overrides'])} ({best['run_dir']})")
    print(f"sweep: {result.html_path} and {result.json_path}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
