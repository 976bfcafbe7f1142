"""`lobell serve` (dynamic batching) vs the same server with batching off vs a plain one-request-one-forward
FastAPI loop: requests/s and p50/p99 latency at 1, 8 and 64 concurrent clients, loopback only.

    python bench/serve.py                       # trains a short real MiniLM run first (~1 minute), ~4 minutes
    python bench/serve.py --run RUN_DIR         # any finished text-classification run folder
    python bench/serve.py --quick               # checks the script (2 s per level); numbers mean little

Each client sends one real Rotten Tomatoes review per request and waits for the answer before the next
(a closed loop), for --seconds per level after a short warm-up. Every server runs in its own process
on 127.0.0.1; the clients run in this process and share the CPU with the server (on 2 cores that costs
the servers some throughput: read the numbers as a comparison on one machine, not as a capacity).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import _common

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
RT = _common.ASSETS / "rotten_tomatoes"
SERVERS = {  # name -> extra `lobell serve` arguments (None: the plain loop)
    "lobell serve (batching: 32, 10 ms)": [],
    "lobell serve (batching: 32, no wait)": ["--max-wait-ms", "0"],
    "lobell serve, batching off (max-batch 1)": ["--max-batch", "1", "--max-wait-ms", "0"],
    "plain loop (one forward per request, fp32)": None,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished text-classification run (default: train a short one)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per concurrency level")
    parser.add_argument("--clients", default="1,8,64", help="concurrency levels (default 1,8,64)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--plain-server", type=Path, help=argparse.SUPPRESS)  # internal: the plain loop's process
    args = parser.parse_args()
    if args.plain_server:
        return _plain_server(args.plain_server)
    seconds = 2.0 if args.quick else args.seconds
    levels = [int(n) for n in args.clients.split(",")]
    texts = _review_texts()
    with _common.work_dir() as work:
        run = args.run or _train_run(Path(work) / "run", quick=args.quick)
        print(f"{_common.machine()}\nrun: {run}; {seconds:g} s per level; clients {levels}", file=sys.stderr)
        rows = []
        for name, extra in SERVERS.items():
            with _server(run, extra) as url:
                for clients in levels:
                    row = asyncio.run(_load(url, texts, clients, seconds))
                    row.update(server=name, clients=clients)
                    print(f"    {json.dumps(row)}", file=sys.stderr, flush=True)
                    rows.append(row)
    print(_table(rows))


def _review_texts() -> list[str]:
    import pandas as pd

    return pd.read_csv(RT / "test.csv")["text"].astype(str).tolist()


def _train_run(out: Path, quick: bool) -> Path:
    """A real run folder: the packaged MiniLM fine-tuned briefly on real reviews (the recipe's other choices)."""
    command = [sys.executable, "-m", "lobell.cli", "train", "task=text-classification", f"model={MINILM}",
               f"data.train={RT / 'train.csv'}", f"data.validation={RT / 'validation.csv'}",
               f"data.max_train_samples={100 if quick else 200}", f"data.max_eval_samples={100 if quick else 300}",
               "epochs=1", f"output_dir={out}", "--quiet"]
    print("training: " + " ".join(command[2:]), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)
    return out


@contextlib.contextmanager
def _server(run: Path, extra: list[str] | None):
    """One server process on a free loopback port, until the block ends."""
    if extra is None:
        command = [sys.executable, __file__, "--plain-server", str(run)]
    else:
        command = [sys.executable, "-m", "lobell.cli", "serve", str(run), "--port", "0", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = None
        deadline = time.monotonic() + 300
        for line in process.stdout:  # the start-up lines, until the server says where it listens
            if found := re.search(r"listening on (http://\S+)", line):
                url = found.group(1)
                break
            if time.monotonic() > deadline:
                break
        if url is None:
            raise SystemExit(f"server did not start: {' '.join(command)}")
        threading.Thread(target=process.stdout.read, daemon=True).start()  # keep its pipe drained
        _wait_healthy(url, deadline)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(url: str, deadline: float) -> None:
    import httpx

    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{url}/health never answered")


async def _load(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    """`clients` closed-loop clients for `seconds`: requests/s, latency percentiles, and the server's batching."""
    import httpx
    import numpy as np

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        for text in texts[:10]:  # warm-up: first-call costs (allocations, kernel selection) are not timed
            (await client.post(f"{url}/predict", json={"texts": [text]})).raise_for_status()
        before = await _batching(client, url)
        latencies: list[float] = []
        stop = time.perf_counter() + seconds

        async def one_client(offset: int) -> None:
            index = offset
            while time.perf_counter() < stop:
                started = time.perf_counter()
                answer = await client.post(f"{url}/predict", json={"texts": [texts[index % len(texts)]]})
                answer.raise_for_status()
                latencies.append(time.perf_counter() - started)
                index += clients

        started = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
        after = await _batching(client, url)
    milliseconds = 1000 * np.asarray(latencies)
    row = {"requests": len(latencies), "requests_per_second": len(latencies) / elapsed,
           "p50_ms": float(np.percentile(milliseconds, 50)), "p99_ms": float(np.percentile(milliseconds, 99))}
    if before and after and after["forward_calls"] > before["forward_calls"]:
        row["mean_batch"] = (after["items"] - before["items"]) / (after["forward_calls"] - before["forward_calls"])
    return row


async def _batching(client, url: str) -> dict | None:
    answer = await client.get(f"{url}/info")
    return answer.json().get("batching") if answer.status_code == 200 else None


def _table(rows: list[dict]) -> str:
    lines = ["| server | clients | requests/s | p50 latency (ms) | p99 latency (ms) | mean batch |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        batch = f"{row['mean_batch']:.1f}" if "mean_batch" in row else "1 (by design)"
        lines.append(f"| {row['server']} | {row['clients']} | {row['requests_per_second']:.1f} | {row['p50_ms']:.1f} "
                     f"| {row['p99_ms']:.1f} | {batch} |")
    plain = {r["clients"]: r["requests_per_second"] for r in rows if r["server"].startswith("plain")}
    batched = {r["clients"]: r["requests_per_second"] for r in rows if "batching: 32, 10 ms" in r["server"]}
    ratios = ", ".join(f"{n} clients {batched[n] / plain[n]:.2f}x" for n in batched if plain.get(n))
    return "\n".join(lines) + f"\n\nlobell serve (defaults) / plain loop, requests/s: {ratios}"


def _plain_server(run: Path) -> None:
    """What a user writes without lobell: FastAPI, the saved model through transformers, one forward per
    request, nothing shared between requests (an async handler: requests run one at a time)."""
    import torch
    import uvicorn
    from fastapi import FastAPI
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = run / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    labels = json.loads((model_dir / "lobell.json").read_text())["labels"]
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(body: dict) -> dict:
        inputs = tokenizer(body["texts"], padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            probs = model(**inputs).logits.softmax(-1)
        best = probs.argmax(-1).tolist()
        return {"predictions": [{"prediction": labels[i], "probability": float(p[i])} for i, p in zip(best, probs)]}

    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
