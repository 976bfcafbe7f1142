"""`lobell serve`: a real server process on loopback answers like `lobell predict`, refuses bad input with
one 4xx message and keeps serving, batches concurrent requests, and its page works in headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import socket

import httpx
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import make_tiny_bert, require_tool, sentiment_rows
from serve_fixtures import Browser, running_server
from vision_fixtures import make_class_folders, save_random_weights

from lobell.cli import main
from lobell.serve import DynamicBatcher, ServeSettings, create_app


# --- tiny real runs, trained by lobell itself --------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run several times faster on one thread when the cores are shared (as in audio_fixtures)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A tiny BERT trained briefly on sentiment rows with `precision: auto` (bf16 where this CPU runs it fast):
    what it learns does not matter here, only that the server answers as `lobell predict` does."""
    root = tmp_path_factory.mktemp("serve_text")
    bert = make_tiny_bert(root / "bert")
    for name, n, seed in [("train", 64, 1), ("validation", 40, 2), ("test", 24, 3)]:
        sentiment_rows(n, seed).to_csv(root / f"{name}.csv", index=False)
    assert main(["train", "--quiet", f"model={bert}", f"data.train={root / 'train.csv'}",
                 f"data.validation={root / 'validation.csv'}", "optimizer.lr=3e-3", "strategy=full",
                 "strategy.backbone_lr_scale=1.0", "scheduler.warmup_ratio=0", "batch_size=16", "epochs=1",
                 "precision=auto", "recipe=false", f"output_dir={root / 'run'}"]) == 0
    return root


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A tiny random ViT fitted for one epoch on red vs blue noise images (fp32)."""
    root = tmp_path_factory.mktemp("serve_image")
    weights = save_random_weights(root / "test_vit.safetensors", "timm", "test_vit")
    make_class_folders(root / "train", 6, seed=1)
    make_class_folders(root / "validation", 3, seed=2)
    make_class_folders(root / "unseen", 3, seed=3)
    assert main(["train", "--quiet", "task=image-classification", "model=timm/test_vit", f"model_weights={weights}",
                 f"data.train={root / 'train'}", f"data.validation={root / 'validation'}", "data.image_size=32",
                 "optimizer.name=adamw", "optimizer.lr=1e-3", "strategy=full", "batch_size=8", "epochs=1",
                 "precision=fp32", "recipe=false", f"output_dir={root / 'run'}"]) == 0
    return root


def _lobell_predict(run, data, tmp_path) -> pd.DataFrame:
    out = tmp_path / "cli_predictions.csv"
    assert main(["predict", str(run), str(data), "--output", str(out), "--quiet"]) == 0
    return pd.read_csv(out)


def _tolerance(info: dict) -> float:
    """Different batch make-ups shift bf16 outputs a little; fp32 ones only by rounding."""
    return 2e-3 if info["precision"] == "bf16" else 1e-5


# --- the real server: predictions ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_server(text_run):
    with running_server(text_run / "run", "--max-items", "64", "--max-body-mb", "16") as server:
        yield server


def test_text_predictions_equal_lobell_predict(text_server, text_run, tmp_path):
    cli = _lobell_predict(text_run / "run", text_run / "test.csv", tmp_path)
    texts = cli["text"].tolist()
    info = httpx.get(f"{text_server.url}/info").json()
    assert info["task"] == "text-classification" and info["labels"] == ["neg", "pos"]
    assert info["metrics"]["validation"]["accuracy"] == json.loads(
        (text_run / "run" / "metrics.json").read_text())["validation"]["accuracy"]
    # One request with the whole file: the same batch as `lobell predict` makes, so the same numbers exactly.
    whole = httpx.post(f"{text_server.url}/predict", json={"texts": texts}, timeout=60)
    assert whole.status_code == 200, whole.text
    served = whole.json()["predictions"]
    assert [p["prediction"] for p in served] == cli["prediction"].tolist()
    np.testing.assert_allclose([p["probability"] for p in served], cli["probability"], atol=1e-6)
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in served)
    # One text per request: other batches, the same predictions (to bf16's rounding where it is used).
    single = [httpx.post(f"{text_server.url}/predict", json={"texts": [t]}, timeout=60).json()["predictions"][0]
              for t in texts[:8]]
    tolerance = _tolerance(info)
    np.testing.assert_allclose([p["probabilities"]["pos"] for p in single],
                               [p["probabilities"]["pos"] for p in served[:8]], atol=tolerance)
    clear = [i for i in range(8) if abs(cli["probability"][i] - 0.5) > tolerance]
    assert [single[i]["prediction"] for i in clear] == [cli["prediction"][i] for i in clear]
    # Multipart text fields read the same.
    form = httpx.post(f"{text_server.url}/predict", files=[("texts", (None, t)) for t in texts[:2]], timeout=60)
    assert [p["prediction"] for p in form.json()["predictions"]] == cli["prediction"].tolist()[:2]


@pytest.fixture(scope="module")
def image_server(image_run):
    with running_server(image_run / "run") as server:
        yield server


def test_image_predictions_equal_lobell_predict(image_run, image_server, tmp_path):
    unseen = sorted((image_run / "unseen").rglob("*.png"))
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i, path in enumerate(unseen):
        (folder / f"{i:02d}.png").write_bytes(path.read_bytes())
    jpeg = io.BytesIO()
    from PIL import Image

    with Image.open(unseen[0]) as image:
        image.save(jpeg, format="JPEG", quality=90)
    (folder / "99.jpg").write_bytes(jpeg.getvalue())
    cli = _lobell_predict(image_run / "run", folder, tmp_path)
    files = sorted(folder.iterdir())
    assert [p.split("/")[-1] for p in cli["image"]] == [f.name for f in files]
    url = image_server.url
    encoded = [base64.b64encode(f.read_bytes()).decode() for f in files]
    by_json = httpx.post(f"{url}/predict", json={"images": encoded}, timeout=60)
    assert by_json.status_code == 200, by_json.text
    uploads = [("files", (f.name, f.read_bytes(), "application/octet-stream")) for f in files]
    by_form = httpx.post(f"{url}/predict", files=uploads, timeout=60)
    data_url = httpx.post(f"{url}/predict", json={"images": ["data:image/png;base64," + encoded[0]]}, timeout=60)
    broken = httpx.post(f"{url}/predict", json={"images": [base64.b64encode(b"not an image").decode()]})
    not_base64 = httpx.post(f"{url}/predict", json={"images": ["%%%"]})
    truncated = httpx.post(f"{url}/predict", files=[("files", ("cut.png", files[0].read_bytes()[:60]))])
    after = httpx.post(f"{url}/predict", json={"images": encoded[:1]}, timeout=60)
    for answer in (by_json, by_form):
        predictions = answer.json()["predictions"]
        assert [p["prediction"] for p in predictions] == cli["prediction"].tolist()
        np.testing.assert_allclose([p["probability"] for p in predictions], cli["probability"], atol=1e-5)
    assert data_url.json()["predictions"][0]["prediction"] == cli["prediction"][0]
    assert broken.status_code == 400 and "images[0] is not an image lobell can read" in broken.json()["error"]
    assert not_base64.status_code == 400 and "images[0] is not valid base64" in not_base64.json()["error"]
    assert truncated.status_code == 400 and "'cut.png'" in truncated.json()["error"]
    assert after.status_code == 200 and after.json()["predictions"][0]["prediction"] == cli["prediction"][0]


def test_the_page_in_headless_chromium_shows_an_uploaded_images_label(image_run, image_server, tmp_path):
    executable = require_tool("chromium", "apt-get install -y chromium")
    image = sorted((image_run / "unseen").rglob("*.png"))[0]
    expected = httpx.post(f"{image_server.url}/predict", files=[("files", (image.name, image.read_bytes()))],
                          timeout=60).json()["predictions"][0]
    browser = Browser(executable, tmp_path / "chromium-profile")
    try:
        browser.send("Page.navigate", url=f"{image_server.url}/")
        assert browser.wait_for("document.body && document.body.dataset.state === 'ready'")
        assert browser.evaluate("getComputedStyle(document.getElementById('file-input')).display") != "none"
        root = browser.send("DOM.getDocument")["root"]["nodeId"]
        node = browser.send("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        browser.send("DOM.setFileInputFiles", nodeId=node, files=[str(image)])  # as the file chooser would
        state = browser.wait_for("['done', 'error'].includes(document.body.dataset.state) && "
                                 "document.body.dataset.state")
        assert state == "done", browser.evaluate("document.getElementById('error').textContent")
        assert browser.evaluate("document.getElementById('label').textContent") == expected["prediction"]
        assert browser.wait_for("document.getElementById('preview').naturalWidth === 32")  # shows what it sent
    finally:
        browser.close()


# --- the real server: bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("body, headers, status, fragment", [
    (b'{"texts": ["unclosed"', {"content-type": "application/json"}, 400, "not valid JSON"),
    (b'{"texts": "one string"}', {"content-type": "application/json"}, 422, "'texts' must be a list of strings"),
    (b'{"texts": ["fine", 7]}', {"content-type": "application/json"}, 422, "texts[1] must be a string, not a number"),
    (b'{"texts": []}', {"content-type": "application/json"}, 422, "'texts' is empty"),
    (b'["a list"]', {"content-type": "application/json"}, 422, "must be an object"),
    (b'{"text": ["x"]}', {"content-type": "application/json"}, 422, "unknown field 'text'"),
    (b'{"images": ["x"]}', {"content-type": "application/json"}, 422, "this text model reads 'texts'"),
    (json.dumps({"texts": ["a"] * 65}).encode(), {"content-type": "application/json"}, 413, "at most 64 (--max-items)"),
    (b"texts=a", {"content-type": "application/x-www-form-urlencoded"}, 415, "send JSON"),
])
def test_bad_requests_get_one_clear_4xx(text_server, body, headers, status, fragment):
    answer = httpx.post(f"{text_server.url}/predict", content=body, headers=headers, timeout=60)
    assert answer.status_code == status, answer.text
    assert list(answer.json()) == ["error"] and fragment in answer.json()["error"]
    assert httpx.post(f"{text_server.url}/predict", json={"texts": ["good film"]}, timeout=60).status_code == 200


def test_a_50_mb_body_is_413_streamed_or_not_and_the_server_keeps_answering(text_server):
    big = b'{"texts": ["' + b"x" * (50 * 2**20) + b'"]}'
    sized = httpx.post(f"{text_server.url}/predict", content=big, headers={"content-type": "application/json"},
                       timeout=120)
    assert sized.status_code == 413 and "at most 16 MB (--max-body-mb)" in sized.json()["error"]

    def chunks():  # no Content-Length: the limit applies while the body streams in
        yield big[: 2**20]
        for start in range(2**20, len(big), 2**20):
            yield big[start: start + 2**20]

    streamed = httpx.post(f"{text_server.url}/predict", content=chunks(), headers={"content-type": "application/json"},
                          timeout=120)
    assert streamed.status_code == 413 and "over 16 MB" in streamed.json()["error"]
    assert httpx.get(f"{text_server.url}/health").json() == {"status": "ok"}
    assert httpx.post(f"{text_server.url}/predict", json={"texts": ["dull"]}, timeout=60).status_code == 200


def test_200_concurrent_requests_are_all_answered_in_shared_batches(text_server):
    texts = sentiment_rows(200, seed=9)["text"].tolist()
    before = httpx.get(f"{text_server.url}/info").json()["batching"]

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)  # bounded: 64 clients at a time, loopback only
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            return await asyncio.gather(*(client.post(f"{text_server.url}/predict", json={"texts": [t]})
                                          for t in texts))

    answers = asyncio.run(send_all())
    assert [a.status_code for a in answers] == [200] * 200
    after = httpx.get(f"{text_server.url}/info").json()["batching"]
    calls, items = after["forward_calls"] - before["forward_calls"], after["items"] - before["items"]
    assert items == 200
    assert calls < 200 and after["largest_batch"] > 1, after  # requests shared forward passes
    # Each answer is its own text's: a repeat of a few texts in one request agrees with them.
    check = httpx.post(f"{text_server.url}/predict", json={"texts": texts[:5]}, timeout=60).json()["predictions"]
    assert [a.json()["predictions"][0]["prediction"] for a in answers[:5]] == [p["prediction"] for p in check]


def test_openapi_schema_describes_predict(text_server):
    schema = httpx.get(f"{text_server.url}/openapi.json").json()
    content = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    assert {"/health", "/info"} <= set(schema["paths"])


def test_the_page_in_headless_chromium_shows_the_typed_texts_label(text_server, tmp_path):
    executable = require_tool("chromium", "apt-get install -y chromium")
    text = "the plot was brilliant and the actor superb"
    expected = httpx.post(f"{text_server.url}/predict", json={"texts": [text]}).json()["predictions"][0]
    page = httpx.get(f"{text_server.url}/")
    assert page.status_code == 200 and "http" not in page.text.split("<script>")[0].replace("http-equiv", "")
    browser = Browser(executable, tmp_path / "chromium-profile")
    try:
        browser.send("Page.navigate", url=f"{text_server.url}/")
        assert browser.wait_for("document.body && document.body.dataset.state === 'ready'")
        assert "text-classification" in browser.evaluate("document.getElementById('model').textContent")
        browser.click("#text")
        browser.send("Input.insertText", text=text)  # typed, as a keyboard would
        browser.click("#predict")
        state = browser.wait_for("['done', 'error'].includes(document.body.dataset.state) && "
                                 "document.body.dataset.state")
        assert state == "done", browser.evaluate("document.getElementById('error').textContent")
        assert browser.evaluate("document.getElementById('label').textContent") == expected["prediction"]
        rows = browser.evaluate("[...document.querySelectorAll('#probabilities tr')].map(r => r.cells[0]"
                                ".textContent)")
        assert sorted(rows) == ["neg", "pos"] and rows[0] == expected["prediction"]  # most probable first
    finally:
        browser.close()


# --- start-up: errors, int8 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("make, fragment", [
    (lambda tmp: tmp / "nowhere", "does not exist"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "has no model"),
])
def test_a_bad_run_folder_is_one_error_line_exit_2(make, fragment, tmp_path, capsys):
    assert main(["serve", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err


def test_a_busy_port_is_one_error_line(text_run, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(text_run / "run"), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "\n" not in err


def test_int8_quantization_measures_its_accuracy_change_on_the_validation_set(text_run):
    import torch

    from lobell.serve.model import ServedModel, describe_quantization

    served = ServedModel.load(text_run / "run", quantize="int8")
    check = served.quantization
    assert check["examples"] == 40  # every validation example of the run
    recorded = json.loads((text_run / "run" / "metrics.json").read_text())["validation"]["accuracy"]
    assert check["metrics"]["accuracy"]["full"] == pytest.approx(recorded, abs=1 / 40)
    assert 0.0 <= check["agreement"] <= 1.0
    assert check["metrics"]["accuracy"]["change"] == pytest.approx(
        check["metrics"]["accuracy"]["int8"] - check["metrics"]["accuracy"]["full"])
    modules = list(served.predictor.adapter.model.modules())
    assert not any(type(m) is torch.nn.Linear for m in modules)  # every Linear layer became an int8 one
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in modules)
    assert served.info()["precision"].startswith("int8")
    line = describe_quantization(check)
    assert "accuracy" in line and "40 validation examples" in line and "agree on" in line


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
    cli = _lobell_predict(tmp_path / "run", clip, tmp_path)
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
