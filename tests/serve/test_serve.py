"""`lobell serve` as a real server process on loopback: it answers like `lobell predict`, refuses bad input
with one 4xx message and keeps serving, batches concurrent requests, and its page works in headless Chromium;
start-up errors and the int8 check. In-process tests (batcher, failures, audio, parsing): test_batching.py."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket

import httpx
import numpy as np
import pytest
from conftest import make_tiny_bert, require_tool, sentiment_rows
from serve_fixtures import Browser, lobell_predict, one_torch_thread, running_server  # noqa: F401 (autouse)
from vision_fixtures import make_class_folders, save_random_weights

from lobell.cli import main


# --- tiny real runs, trained by lobell itself --------------------------------------------------------------

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


def _tolerance(info: dict) -> float:
    """Different batch make-ups shift bf16 outputs a little; fp32 ones only by rounding."""
    return 2e-3 if info["precision"] == "bf16" else 1e-5


# --- the real server: predictions ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_server(text_run):
    with running_server(text_run / "run", "--max-items", "64", "--max-body-mb", "16") as server:
        yield server


def test_text_predictions_equal_lobell_predict(text_server, text_run, tmp_path):
    cli = lobell_predict(text_run / "run", text_run / "test.csv", tmp_path)
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
    cli = lobell_predict(image_run / "run", folder, tmp_path)
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
