"""`lobell serve RUN_DIR`: load the run's model, say how it is served, and run uvicorn."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict
from pathlib import Path

from lobell.errors import LobellError
from lobell.run_dir import check_run_dir
from lobell.serve.app import ServeSettings, create_app

# A worker answers uvicorn's health check only between Python bytecodes: loading torch and the model can hold
# it off for many seconds on busy cores, and uvicorn's default (5 s) would then kill and restart it forever.
WORKER_START_S = 300
_SETTINGS_ENV = "LOBELL_SERVE_SETTINGS"  # how uvicorn's worker processes (--workers N) get the settings


def serve(settings: ServeSettings) -> None:
    """Load the model (a bad run folder is one LobellError), print what is served, and serve until stopped."""
    from lobell.serve.model import ServedModel, describe_quantization

    _check(settings)
    check_run_dir(Path(settings.run_dir))  # before the slow imports: a wrong path answers at once
    listener = _listen(settings.host, settings.port)  # first: a busy port is an error before minutes of loading
    try:
        model = ServedModel.load(settings.run_dir, settings.quantize)
    except BaseException:
        listener.close()
        raise
    host, port = listener.getsockname()[:2]
    info = model.info()
    labels = info["labels"]
    shown = ", ".join(map(str, labels[:10])) + (f" and {len(labels) - 10} more" if len(labels) > 10 else "") \
        if isinstance(labels, list) else ", ".join(labels or {})
    _say(f"lobell serve: {info['task']} model from {settings.run_dir} (base {info['base_model']}; "
         f"{'labels ' + shown if shown else 'no labels'}); inference in {info['precision']}")
    if settings.quantize:
        _say(describe_quantization(model.quantization))
    _say(f"lobell serve: batches of up to {settings.max_batch} within {settings.max_wait_ms:g} ms; at most "
         f"{settings.max_items} inputs and {settings.max_body_mb:g} MB per request; {settings.workers} worker(s)")
    url_host = f"[{host}]" if ":" in host else host
    _say(f"lobell serve: listening on http://{url_host}:{port} (the page: /, the API: /docs)")
    if settings.workers > 1:
        listener.close()
        del model  # each worker loads its own copy
        _serve_workers(settings, port)
    else:
        _serve_one(create_app(model, settings), settings, listener)


def app_from_environment():
    """uvicorn's app factory in each worker process (--workers N): the model, loaded from the settings."""
    import torch

    from lobell.serve.model import ServedModel

    settings = ServeSettings(**json.loads(os.environ[_SETTINGS_ENV]))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))  # workers share the cores
    model = ServedModel.load(settings.run_dir, settings.quantize, check=False)  # the parent printed the check
    return create_app(model, settings)


def _serve_one(app, settings: ServeSettings, listener: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", log_config=_log_config(),
                            access_log=False, timeout_graceful_shutdown=10)
    uvicorn.Server(config).run(sockets=[listener])


def _serve_workers(settings: ServeSettings, port: int) -> None:
    import uvicorn

    os.environ[_SETTINGS_ENV] = json.dumps({**asdict(settings), "port": port})
    uvicorn.run("lobell.serve.server:app_from_environment", factory=True, host=settings.host, port=port,
                workers=settings.workers, log_level="info", log_config=_log_config(), access_log=False,
                timeout_graceful_shutdown=10, timeout_worker_healthcheck=WORKER_START_S)


def _check(settings: ServeSettings) -> None:
    for name in ("workers", "max_batch", "max_items"):
        if getattr(settings, name) < 1:
            raise LobellError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(settings, name)}")
    if settings.max_wait_ms < 0:
        raise LobellError(f"--max-wait-ms must be 0 or more, not {settings.max_wait_ms:g}")
    if settings.max_body_mb <= 0:
        raise LobellError(f"--max-body-mb must be more than 0, not {settings.max_body_mb:g}")
    if not 0 <= settings.port <= 65535:
        raise LobellError(f"--port must be 0..65535, not {settings.port}")


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a busy port is one error line (port 0: any free port)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as exc:
        raise LobellError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --host or "
                          f"--port") from None
    listener.set_inheritable(True)
    return listener


def _log_config() -> dict:
    """uvicorn's logging, with lobell's own lines (model failures) through the same handler and format."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["lobell.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _say(line: str) -> None:
    print(line, flush=True)
