"""`lobell serve RUN_DIR`: an HTTP server (FastAPI on uvicorn) for a finished run's model, with dynamic
batching and a page to try it. Import it only to serve: it pulls in fastapi, uvicorn and torch."""

from lobell.serve.app import ServeSettings, create_app
from lobell.serve.batching import DynamicBatcher

__all__ = ["ServeSettings", "create_app", "DynamicBatcher", "serve"]


def serve(settings: ServeSettings) -> None:
    """Serve until stopped (Ctrl+C or SIGTERM): see lobell.serve.server."""
    from lobell.serve.server import serve as run

    run(settings)
