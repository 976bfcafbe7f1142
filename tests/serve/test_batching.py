"""`lobell serve` in process: the dynamic batcher with a counting model, model failures as 500s, audio uploads
against `lobell predict` (a real tiny wav2vec2 run), and request parsing under arbitrary bodies."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from serve_fixtures import lobell_predict, one_torch_thread  # noqa: F401 (autouse: one torch thread)

from lobell.cli import main
from lobell.serve import DynamicBatcher, ServeSettings, create_app


# --- in process: the batcher and model failures --------------------------------------------------------------

class CountingModel:
    """A stand-in model: records each forward call's size; an input 'boom' raises inside the model."""

    modality = "text"
    sampling_rate = None

    def __init__(self):
        self.calls: list[int] = []

    def predict(self, inputs: list) -> list[dict]:
        self.calls.append(len(inputs))
        if "boom" in inputs:
            raise RuntimeError("a tensor went wrong")
        return [{"prediction": text.upper()} for text in inputs]

    def info(self) -> dict:
        return {"task": "text-classification", "modality": "text"}


def test_the_batcher_groups_concurrent_requests_up_to_max_batch():
    model = CountingModel()

    async def scenario():
        batcher = DynamicBatcher(model.predict, max_batch=32, max_wait_s=0.05)
        await batcher.start()
        try:
            results = await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(200)))
            alone = await batcher.submit(["solo"])
            big = await batcher.submit([f"b{i}" for i in range(70)])  # one request larger than a batch
            return results, alone, big, batcher.stats.as_dict()
        finally:
            await batcher.stop()

    results, alone, big, stats = asyncio.run(scenario())
    assert [r[0]["prediction"] for r in results] == [f"T{i}" for i in range(200)]  # each its own answer
    assert model.calls[:7] == [32] * 6 + [8]  # 200 requests in 7 forward passes, none over max_batch
    assert alone == [{"prediction": "SOLO"}] and model.calls[7] == 1
    assert [r["prediction"] for r in big] == [f"B{i}" for i in range(70)] and model.calls[8:] == [32, 32, 6]
    assert stats["forward_calls"] == 11 and stats["items"] == 271 and stats["largest_batch"] == 32


def test_a_failing_request_does_not_fail_its_batch_neighbours():
    model = CountingModel()

    async def scenario():
        batcher = DynamicBatcher(model.predict, max_batch=8, max_wait_s=0.05)
        await batcher.start()
        try:
            return await asyncio.gather(batcher.submit(["a"]), batcher.submit(["boom"]), batcher.submit(["c"]),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    first, failed, third = asyncio.run(scenario())
    assert first == [{"prediction": "A"}] and third == [{"prediction": "C"}]
    assert isinstance(failed, RuntimeError)
    assert model.calls[0] == 3  # they did share a batch before the retry isolated the failure


def test_a_failure_inside_the_model_is_a_500_with_a_log_line_and_the_next_request_works(caplog):
    from fastapi.testclient import TestClient

    app = create_app(CountingModel(), ServeSettings(run_dir="fake", max_wait_ms=0))
    with TestClient(app) as client, caplog.at_level(logging.ERROR, logger="lobell.serve"):
        failed = client.post("/predict", json={"texts": ["boom"]})
        assert failed.status_code == 500
        assert "the model failed on this request (RuntimeError: a tensor went wrong)" in failed.json()["error"]
        assert any("the model failed" in r.getMessage() and r.exc_info for r in caplog.records)
        again = client.post("/predict", json={"texts": ["fine"]})
        assert again.status_code == 200 and again.json() == {"predictions": [{"prediction": "FINE"}]}
        assert client.get("/info").json()["batching"]["failed_calls"] == 1


# --- audio, in process (real tiny wav2vec2 run) ----------------------------------------------------------------

def test_audio_upload_matches_lobell_predict_and_a_too_short_clip_is_a_500(tmp_path, caplog):
    from audio_fixtures import make_tiny_wav2vec2
    from fastapi.testclient import TestClient

    from lobell.serve.model import ServedModel

    rng = np.random.default_rng(0)
    time = np.arange(8000) / 16000
    for name, pitch in [("low", 220.0), ("high", 880.0)]:
        (tmp_path / "clips" / name).mkdir(parents=True)
        for i in range(6):
            wave = np.sin(2 * np.pi * pitch * time + rng.uniform(0, 6)) * 0.3 + rng.normal(0, 0.01, time.size)
            sf.write(tmp_path / "clips" / name / f"{i}.wav", wave.astype(np.float32), 16000)
    model = make_tiny_wav2vec2(tmp_path / "w2v")
    assert main(["train", "--quiet", "task=audio-classification", f"model={model}", f"data.train={tmp_path / 'clips'}",
                 "data.val_fraction=0.25", "epochs=1", "batch_size=4", "strategy=full", "recipe=false",
                 "precision=fp32", f"output_dir={tmp_path / 'run'}"]) == 0
    clip = tmp_path / "clips" / "high" / "0.wav"
    cli = lobell_predict(tmp_path / "run", clip, tmp_path)
    app = create_app(ServedModel.load(tmp_path / "run"), ServeSettings(run_dir=str(tmp_path / "run")))
    with TestClient(app) as client, caplog.at_level(logging.ERROR, logger="lobell.serve"):
        answer = client.post("/predict", files=[("files", ("clip.wav", clip.read_bytes(), "audio/wav"))])
        assert answer.status_code == 200, answer.text
        prediction = answer.json()["predictions"][0]
        assert prediction["prediction"] == cli["prediction"][0]
        assert prediction["probability"] == pytest.approx(cli["probability"][0], abs=1e-5)
        by_json = client.post("/predict", json={"audio": [base64.b64encode(clip.read_bytes()).decode()]})
        assert by_json.json()["predictions"][0]["prediction"] == cli["prediction"][0]
        garbage = client.post("/predict", files=[("files", ("noise.wav", b"RIFF0000WAVEjunk", "audio/wav"))])
        assert garbage.status_code == 400 and "not audio lobell can read" in garbage.json()["error"]
        short = io.BytesIO()
        sf.write(short, np.zeros(8, dtype=np.float32), 16000, format="WAV")
        crashed = client.post("/predict", files=[("files", ("short.wav", short.getvalue(), "audio/wav"))])
        assert crashed.status_code == 500 and "the model failed" in crashed.json()["error"]
        assert any("the model failed" in r.getMessage() for r in caplog.records)
        assert client.post("/predict", files=[("files", ("clip.wav", clip.read_bytes()))]).status_code == 200


# --- request parsing, in process ----------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=3), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(json_values.map(lambda v: json.dumps(v).encode()),
                      st.dictionaries(st.sampled_from(["texts", "images", "x"]), json_values, max_size=2)
                      .map(lambda v: json.dumps(v).encode()), st.binary(max_size=40)))
def test_any_body_is_a_list_of_strings_or_one_4xx(body):
    from lobell.serve.inputs import Limits, RequestError, parse_json

    try:
        items = parse_json(body, "text", Limits(max_items=3, max_body_bytes=2**20))
    except RequestError as exc:
        assert 400 <= exc.status < 500 and exc.message and "\n" not in exc.message
    else:
        assert 1 <= len(items) <= 3 and all(isinstance(item, str) for item in items)


def test_deeply_nested_json_is_a_400_not_a_crash():
    from lobell.serve.inputs import Limits, RequestError, parse_json

    with pytest.raises(RequestError) as caught:
        parse_json(b"[" * 100_000 + b"]" * 100_000, "text", Limits(3, 2**30))
    assert caught.value.status == 400


def test_nan_in_metrics_or_outputs_still_serialises():
    from lobell.serve.model import json_safe

    value = json_safe({"loss": float("nan"), "r2": np.float32(0.5), "rows": [np.float64("inf"), 1]})
    assert value == {"loss": None, "r2": 0.5, "rows": [None, 1]}
    json.dumps(value, allow_nan=False)
