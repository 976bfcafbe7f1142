"""The HTTP app: POST /predict (batched), GET /health, GET /info, GET / (the try-it page), OpenAPI at /docs."""

from __future__ import annotations

import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from lobell.serve.batching import DynamicBatcher
from lobell.serve.inputs import Limits, RequestError, check_count, decode_base64, decoder_for, field_for, parse_json
from lobell.serve.page import page_html

log = logging.getLogger("lobell.serve")


@dataclass
class ServeSettings:
    """`lobell serve`'s options (they travel to uvicorn's worker processes as JSON)."""

    run_dir: str
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch: int = 32
    max_wait_ms: float = 10.0
    max_body_mb: float = 16.0
    max_items: int = 256
    quantize: str | None = None

    def limits(self) -> Limits:
        return Limits(self.max_items, int(self.max_body_mb * 1024 * 1024))


class PredictRequest(BaseModel):
    """A JSON body: one list, named for the model's inputs (only the model's own field is accepted)."""

    texts: list[str] | None = Field(None, description="text models: the texts to predict", examples=[["a fine film"]])
    images: list[str] | None = Field(None, description="image models: base64 image bytes (a data: URL prefix is "
                                                       "fine)")
    audio: list[str] | None = Field(None, description="audio models: base64 WAV/FLAC/OGG bytes")


class Prediction(BaseModel):
    prediction: str | float | None = Field(None, description="the label(s) (multi-label: joined by |) or the value")
    probability: float | None = Field(None, description="classification: the predicted label's probability")
    probabilities: dict[str, float] | None = Field(None, description="every label's probability")
    model_config = {"extra": "allow"}  # multi-task columns (`<task>/prediction`), transcripts


class PredictResponse(BaseModel):
    predictions: list[Prediction]


_MULTIPART = {"multipart/form-data": {"schema": {"type": "object", "properties": {
    "files": {"type": "array", "items": {"type": "string", "format": "binary"},
              "description": "image or audio files (any field name)"},
    "texts": {"type": "array", "items": {"type": "string"}, "description": "text models: one field per text"}}}}}
_PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": PredictRequest.model_json_schema()}, **_MULTIPART}}}


class Servable(Protocol):
    """What the app needs of a model (`ServedModel`; tests use a counting stand-in)."""

    modality: str  # text, image, audio or speech: how request bodies are read
    sampling_rate: int | None  # audio: the rate uploads are resampled to

    def predict(self, inputs: list) -> list[dict]: ...  # one JSON-ready record per input, on the model thread

    def info(self) -> dict: ...


def create_app(model: Servable, settings: ServeSettings) -> FastAPI:
    """The app for one loaded model: routes, error handlers, the body limit, and the batcher's lifetime."""
    batcher = DynamicBatcher(model.predict, settings.max_batch, settings.max_wait_ms / 1000)
    limits = settings.limits()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="lobell serve", version="1", lifespan=lifespan,
                  description=f"Predictions from the lobell run {settings.run_dir}")
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    _add_error_handlers(app)
    page = page_html()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict:
        return {**model.info(), "pid": os.getpid(), "batching": {**batcher.stats.as_dict(),
                "max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms},
                "limits": {"max_items": settings.max_items, "max_body_mb": settings.max_body_mb}}

    @app.post("/predict", response_model=PredictResponse, openapi_extra=_PREDICT_BODY,
              responses={400: {"description": "malformed JSON, bad base64, an undecodable image or audio file"},
                         413: {"description": "a body over --max-body-mb, or more inputs than --max-items"},
                         415: {"description": "neither JSON nor multipart"},
                         422: {"description": "wrong field names or types, an empty list"},
                         500: {"description": "the model failed (the server log says why)"}})
    async def predict(request: Request) -> JSONResponse:
        started = time.perf_counter()
        inputs = await read_inputs(request, model, limits)
        try:
            records = await batcher.submit(inputs)
        except Exception as exc:  # the model failed: this request gets a 500, the server keeps serving
            log.error("the model failed on a request of %d input(s): %s", len(inputs), _one_line(exc),
                      exc_info=exc)
            return JSONResponse({"error": f"the model failed on this request ({_one_line(exc)}); the server log "
                                          f"has the traceback"}, status_code=500)
        log.debug("predicted %d input(s) in %.1f ms", len(inputs), 1000 * (time.perf_counter() - started))
        return JSONResponse({"predictions": records})

    return app


async def read_inputs(request: Request, model: Servable, limits: Limits) -> list:
    """The request's inputs as the model reads them (texts, RGB arrays, waveforms), or a RequestError."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    field = field_for(model.modality)
    if kind == "application/json" or kind.endswith("+json"):
        raw = parse_json(await request.body(), model.modality, limits)
        if model.modality == "text":
            return raw
        return await run_in_threadpool(_decode_all, [decode_base64(item, f"{field}[{i}]") for i, item in
                                                     enumerate(raw)], model, field)
    if kind == "multipart/form-data":
        return await _read_form(request, model, limits, field)
    raise RequestError(415, f"send JSON (Content-Type: application/json) or multipart/form-data, not "
                            f"'{kind or 'no content type'}'")


async def _read_form(request: Request, model: Servable, limits: Limits, field: str) -> list:
    try:
        form = await request.form(max_files=limits.max_items + 1, max_fields=limits.max_items + 1)
    except HTTPException as exc:
        status = 413 if "too many" in str(exc.detail).lower() else 400
        raise RequestError(status, f"the multipart body cannot be read: {exc.detail}") from None
    try:
        uploads = [(name, value) for name, value in form.multi_items() if not isinstance(value, str)]
        texts = [value for name, value in form.multi_items() if isinstance(value, str) and name in ("text", "texts")]
        if model.modality == "text":
            if uploads:
                raise RequestError(422, "this text model reads text fields named 'texts', not file uploads")
            check_count(len(texts), "texts", limits)
            return texts
        check_count(len(uploads), field, limits)
        blobs = [await upload.read() for _, upload in uploads]
        labels = [f"{field}[{i}] ('{upload.filename}')" for i, (_, upload) in enumerate(uploads)]
    finally:
        await form.close()
    return await run_in_threadpool(_decode_all, blobs, model, field, labels)


def _decode_all(blobs: list[bytes], model: Servable, field: str, labels: list[str] | None = None) -> list:
    labels = labels or [f"{field}[{i}]" for i in range(len(blobs))]
    decode = decoder_for(model.modality)
    return [decode(data, label, model.sampling_rate) for data, label in zip(blobs, labels)]


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is `{"error": "<one sentence>"}`; a failure inside the model is a 500 and a log line."""

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg')}" if where else first.get("msg")}, 422)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"the server failed on this request ({_one_line(exc)}); the server log has "
                                      f"the traceback"}, status_code=500)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` is a 413, by its Content-Length before anything is read,
    or while it streams in (chunked uploads), so an oversized body never sits in memory whole."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._discard(receive, 0)
            response = JSONResponse({"error": self._message(int(length))}, status_code=413,
                                    headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    if message.get("more_body"):
                        await self._discard(receive, seen)
                    raise RequestError(413, self._message(seen, streamed=True))
            return message

        return await self.app(scope, limited_receive, send)

    async def _discard(self, receive, seen: int) -> None:
        """Read the rest of an oversized body without keeping it: a server that answers and closes while the
        client still sends makes the kernel reset the connection, and the client never sees the 413 (nginx
        calls this a lingering close). Past 4x the limit it stops reading: a client that big gets the reset."""
        while seen <= 4 * self.max_bytes + 2**20:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body"):
                return

    def _message(self, size: int, streamed: bool = False) -> str:
        amount = f"over {self.max_bytes / 2**20:g} MB" if streamed else f"{size / 2**20:.1f} MB"
        return (f"the request body is {amount}; this server takes at most {self.max_bytes / 2**20:g} MB "
                f"(--max-body-mb): send fewer or smaller inputs per request")
