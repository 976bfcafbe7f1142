"""Request bodies -> the inputs a run's model reads: texts, decoded images, waveforms; or one clear 4xx."""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass

import numpy as np

# What a JSON body names its list of inputs, per modality (speech is audio too).
FIELDS = {"text": "texts", "image": "images", "audio": "audio", "speech": "audio"}


class RequestError(Exception):
    """A request the server refuses: an HTTP status and one sentence saying what to change."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Limits:
    max_items: int  # inputs per request
    max_body_bytes: int  # request body size


def field_for(modality: str) -> str:
    return FIELDS[modality]


def parse_json(body: bytes, modality: str, limits: Limits) -> list:
    """A JSON body's raw inputs: strings (texts, or base64 for images and audio); checked, not yet decoded."""
    field = field_for(modality)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON ({exc}); send {_example(field)}") from None
    except RecursionError:
        raise RequestError(400, f"the JSON body nests too deeply to read; send {_example(field)}") from None
    if not isinstance(data, dict):
        raise RequestError(422, f"the JSON body must be an object like {_example(field)}, not a {_json_type(data)}")
    unknown = sorted(set(data) - {field})
    if unknown:
        name = json.dumps(unknown[0])[1:-1]  # escaped: a key with a newline stays on one line
        name = name if len(name) <= 40 else name[:40] + "..."
        raise RequestError(422, f"unknown field '{name}': this {modality} model reads '{field}', e.g. "
                                f"{_example(field)}")
    if field not in data:
        raise RequestError(422, f"the body has no '{field}' field; send {_example(field)}")
    items = data[field]
    if not isinstance(items, list):
        raise RequestError(422, f"'{field}' must be a list of strings, not a {_json_type(items)}")
    check_count(len(items), field, limits)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise RequestError(422, f"{field}[{index}] must be a string, not a {_json_type(item)}")
    return items


def check_count(count: int, field: str, limits: Limits) -> None:
    if count == 0:
        raise RequestError(422, f"'{field}' is empty: send at least one input")
    if count > limits.max_items:
        raise RequestError(413, f"{count} inputs in one request; this server takes at most {limits.max_items} "
                                f"(--max-items): split them into several requests")


def decode_base64(text: str, label: str) -> bytes:
    """Standard or URL-safe base64, with or without a `data:...;base64,` prefix."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    compact = "".join(text.split())
    try:
        data = base64.b64decode(compact + "=" * (-len(compact) % 4), altchars=b"-_" if "-" in compact or "_" in
                                compact else None, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, f"{label} is not valid base64 ({exc})") from None
    if not data:
        raise RequestError(400, f"{label} is empty")
    return data


def decoder_for(modality: str):
    """`decode(data, label, sampling_rate) -> input` for a modality's uploaded files (text needs none)."""
    return {"image": decode_image, "audio": decode_audio, "speech": decode_audio}[modality]


def decode_image(data: bytes, label: str, sampling_rate: int | None = None) -> np.ndarray:
    """RGB pixels, decoded exactly as `lobell predict` decodes an image file (lobell.data.image.open_rgb)."""
    from lobell.data.image import open_rgb
    from lobell.errors import LobellError

    try:
        return np.asarray(open_rgb(_Upload(data, label)))
    except LobellError as exc:
        reason = str(exc).split("cannot be read: ", 1)[-1].replace(f" {label}", "")
        raise RequestError(400, f"{label} is not an image lobell can read ({reason}); send PNG, JPEG, WebP, "
                                f"BMP, GIF or TIFF bytes") from None


def decode_audio(data: bytes, label: str, sampling_rate: int) -> np.ndarray:
    """A mono float32 waveform at the model's rate, as `lobell predict` reads an audio file (load_waveform)."""
    import soundfile as sf

    from lobell.data.audio import resample

    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, TypeError, ValueError) as exc:  # LibsndfileError is a RuntimeError
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RequestError(400, f"{label} is not audio lobell can read ({reason}); send WAV, FLAC or OGG bytes") \
            from None
    if samples.shape[0] == 0:
        raise RequestError(400, f"{label} holds no samples")
    return resample(samples.mean(axis=1), rate, sampling_rate)


class _Upload(io.BytesIO):
    """Uploaded bytes that name themselves in error messages (`images[2]`) rather than by address."""

    def __init__(self, data: bytes, label: str):
        super().__init__(data)
        self.label = label

    def __str__(self) -> str:
        return self.label

    __repr__ = __str__


def _example(field: str) -> str:
    return '{"texts": ["a review to classify"]}' if field == "texts" else f'{{"{field}": ["<base64 bytes>"]}}'


def _json_type(value) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)
