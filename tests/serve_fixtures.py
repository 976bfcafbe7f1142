"""Serve fixtures: `lobell serve` as a child process on a free loopback port, and headless Chromium driven
through the DevTools protocol over a pipe (no websocket library needed)."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import pytest

START_DEADLINE_S = 180  # model loading on a loaded 2-core machine: generous; the wait ends when /health answers


def _default_signals() -> None:
    """In the child: SIGINT/SIGTERM/SIGPIPE as a fresh process has them, whatever the test runner set."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)


@dataclass
class Server:
    process: subprocess.Popen
    url: str = ""
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(self.lines)


def _collect(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))


@contextlib.contextmanager
def running_server(run_dir: Path, *args: str) -> Iterator[Server]:
    """`lobell serve RUN_DIR --port 0 ARGS` on 127.0.0.1; yields once /health answers; always stopped after."""
    command = [sys.executable, "-m", "lobell.cli", "serve", str(run_dir), "--host", "127.0.0.1", "--port", "0", *args]
    # One torch thread, waiting passively: on a shared, oversubscribed machine, spinning torch threads wait on
    # each other's time slices and a forward pass of the tiny models takes 10-30x longer; nothing checked changes.
    env = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=_default_signals, env=env)
    server = Server(process)
    reader = threading.Thread(target=_collect, args=(process.stdout, server.lines), daemon=True)
    reader.start()
    try:
        server.url = _wait_until_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()  # SIGTERM: uvicorn shuts down gracefully
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        reader.join(timeout=10)


def _wait_until_healthy(server: Server) -> str:
    deadline = time.monotonic() + START_DEADLINE_S
    url = ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"lobell serve exited with {server.process.returncode}:\n{server.output()}")
        if not url:
            found = [m for line in list(server.lines) if (m := re.search(r"listening on (http://\S+)", line))]
            url = found[0].group(1) if found else ""
        if url:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    return url
        time.sleep(0.1)  # polling an observable event, with a deadline
    raise AssertionError(f"lobell serve did not answer /health within {START_DEADLINE_S} s:\n{server.output()}")


class Browser:
    """Headless Chromium with the DevTools protocol on fds 3/4 (--remote-debugging-pipe), attached to one page."""

    def __init__(self, executable: str, user_data_dir: Path):
        to_chrome_read, to_chrome_write = os.pipe()
        from_chrome_read, from_chrome_write = os.pipe()
        # High numbers first, so that placing them at 3 and 4 in the child never overwrites one with the other.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (to_chrome_read, from_chrome_write)]
        for fd in (to_chrome_read, from_chrome_write):
            os.close(fd)

        def place_pipes() -> None:
            _default_signals()
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--remote-debugging-pipe", f"--user-data-dir={user_data_dir}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(3, 4),
            preexec_fn=place_pipes)
        for fd in high:
            os.close(fd)
        self._out = os.fdopen(to_chrome_write, "wb", buffering=0)
        self._in = os.fdopen(from_chrome_read, "rb", buffering=0)
        self._messages: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        threading.Thread(target=self._read, daemon=True).start()
        self.session = None
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def _read(self) -> None:
        buffer = b""
        while chunk := self._in.read(65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._messages.put(json.loads(message))

    def send(self, method: str, timeout: float = 60, **params):
        """One DevTools command's result (events in between are dropped)."""
        ident = next(self._ids)
        message = {"id": ident, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        self._out.write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"Chromium did not answer {method} within {timeout} s")
            reply = self._messages.get(timeout=remaining)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise AssertionError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} raised in the page: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, deadline_s: float = 60):
        """The value of `expression` once it is truthy (polled: the page's state is the observable event)."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"{expression!r} stayed false for {deadline_s} s")

    def click(self, selector: str) -> None:
        """A real mouse click at the element's centre."""
        box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            f".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.session = None
            self.send("Browser.close", timeout=10)
        with contextlib.suppress(Exception):
            self.process.wait(timeout=20)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)
        for stream in (self._out, self._in):
            with contextlib.suppress(OSError):
                stream.close()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run several times faster on one thread when the cores are shared (as in audio_fixtures)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def lobell_predict(run, data, tmp_path) -> pd.DataFrame:
    """`lobell predict RUN DATA` through the CLI, as a table."""
    from lobell.cli import main

    out = tmp_path / "cli_predictions.csv"
    assert main(["predict", str(run), str(data), "--output", str(out), "--quiet"]) == 0
    return pd.read_csv(out)
