"""GET /: one self-contained page (inline CSS and JS, no external assets) to try the model by hand."""

from __future__ import annotations

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lobell serve</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  #model { color: #666; margin-top: 0; }
  textarea { width: 100%; box-sizing: border-box; min-height: 6rem; font: inherit; padding: .5rem; }
  button { font: inherit; padding: .4rem 1.2rem; margin-top: .5rem; cursor: pointer; }
  #drop { border: 2px dashed #999; border-radius: 8px; padding: 2rem; text-align: center; color: #555; }
  #drop.over { border-color: #2a6; background: #f3fbf6; }
  #preview { max-width: 100%; max-height: 16rem; min-height: 6rem; display: block; margin: .8rem auto 0;
             image-rendering: pixelated; }
  #label { font-size: 1.6rem; font-weight: 600; margin: 1rem 0 .4rem; }
  table { border-collapse: collapse; width: 100%; }
  td { padding: .15rem .4rem; vertical-align: middle; }
  td.name { width: 30%; white-space: nowrap; }
  td.value { width: 5rem; text-align: right; font-variant-numeric: tabular-nums; }
  .bar { height: .9rem; background: #2a6; border-radius: 3px; }
  #error { color: #b00; white-space: pre-wrap; }
  .hidden { display: none; }
</style>
</head>
<body data-state="loading">
<h1>lobell serve</h1>
<p id="model">loading the model's details...</p>
<section id="text-input" class="hidden">
  <label for="text">Text</label>
  <textarea id="text" placeholder="type a text, then Predict (or Ctrl+Enter)"></textarea>
  <button id="predict" type="button">Predict</button>
</section>
<section id="file-input" class="hidden">
  <div id="drop">drop a file here, or <input id="file" type="file"></div>
  <img id="preview" class="hidden" alt="the image sent">
  <audio id="player" class="hidden" controls></audio>
</section>
<div id="result" class="hidden">
  <div id="label"></div>
  <table id="probabilities"></table>
</div>
<p id="error"></p>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let info = null;

function setState(state) { document.body.dataset.state = state; }

async function load() {
  try {
    const response = await fetch("/info");
    info = await response.json();
    const metric = info.metrics && info.metrics.validation ? Object.entries(info.metrics.validation)
      .filter(([k]) => k !== "loss").slice(0, 2).map(([k, v]) => `${k} ${Number(v).toFixed(3)}`).join(", ") : "";
    $("model").textContent = [info.task, info.base_model, info.precision, metric && `validation: ${metric}`]
      .filter(Boolean).join(" \u00b7 ");
    const text = info.modality === "text";
    $("text-input").classList.toggle("hidden", !text);
    $("file-input").classList.toggle("hidden", text);
    $("file").accept = info.modality === "image" ? "image/*" : "audio/*";
    setState("ready");
  } catch (error) {
    showError(`cannot reach the server: ${error}`);
  }
}

async function send(body, headers) {
  setState("busy");
  $("error").textContent = "";
  try {
    const response = await fetch("/predict", { method: "POST", body, headers });
    const answer = await response.json();
    if (!response.ok) { showError(answer.error || response.statusText); return; }
    show(answer.predictions[0]);
  } catch (error) {
    showError(String(error));
  }
}

function predictText() {
  send(JSON.stringify({ texts: [$("text").value] }), { "Content-Type": "application/json" });
}

function predictFile(file) {
  if (!file) return;
  const url = URL.createObjectURL(file);
  const image = info && info.modality === "image";
  $("preview").classList.toggle("hidden", !image);
  $("player").classList.toggle("hidden", image);
  (image ? $("preview") : $("player")).src = url;
  const form = new FormData();
  form.append("files", file, file.name);
  send(form, {});
}

function show(prediction) {
  const label = prediction.prediction ?? prediction.transcript;
  const rows = [];
  if (label !== undefined) {
    $("label").textContent = typeof label === "number" ? label.toPrecision(5) : (label === "" ? "(none)" : label);
  } else {  // a multi-task model: one prediction per task
    $("label").textContent = "";
    for (const [key, value] of Object.entries(prediction)) rows.push([key, value, null]);
  }
  const probabilities = prediction.probabilities || {};
  for (const [name, p] of Object.entries(probabilities).sort((a, b) => b[1] - a[1])) rows.push([name, p, p]);
  const table = $("probabilities");
  table.replaceChildren(...rows.map(([name, value, p]) => {
    const row = document.createElement("tr");
    const cells = [name, "", typeof value === "number" ? value.toFixed(4) : String(value)];
    cells.forEach((text, i) => {
      const cell = document.createElement("td");
      cell.className = ["name", "graph", "value"][i];
      if (i === 1 && p !== null) {
        const bar = document.createElement("div");
        bar.className = "bar";
        bar.style.width = `${Math.max(0.5, 100 * p)}%`;
        cell.appendChild(bar);
      } else {
        cell.textContent = text;
      }
      row.appendChild(cell);
    });
    return row;
  }));
  $("result").classList.remove("hidden");
  setState("done");
}

function showError(message) {
  $("error").textContent = message;
  setState("error");
}

$("predict").addEventListener("click", predictText);
$("text").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) predictText(); });
$("file").addEventListener("change", (e) => predictFile(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over");
                                       predictFile(e.dataTransfer.files[0]); });
load();
</script>
</body>
</html>
"""


def page_html() -> str:
    """The page; it asks GET /info what the model reads, so one page serves every task."""
    return _PAGE
