// The torchkeel web page: draw or upload an image (or type a text), POST it to /predict,
// show the top classes as bars. Plain JavaScript, no libraries, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const TOP_K = 5;

async function start() {
  const info = await (await fetch("/info")).json();
  const spec = info.spec;
  const metric = info.metrics.accuracy !== undefined ? `, test accuracy ${(info.metrics.accuracy * 100).toFixed(1)}%` : "";
  $("model").textContent = `${info.model.name} on ${spec.name} (${spec.task}${metric})`;
  if (spec.kind === "image") setUpImage(spec);
  else if (spec.kind === "text") setUpText();
  else if (spec.kind === "table") setUpTable(info.columns || []);
}

function setUpImage(spec) {
  $("image-input").hidden = false;
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const [, , width] = spec.input_shape;
  // a stroke about 1.6 pixels of the model's input wide, as handwriting is in the data sets
  ctx.lineWidth = Math.min(60, Math.max(24, (pad.width / width) * 1.6));
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.strokeStyle = "#fff";
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height); };
  clear();

  let drawing = false;
  const point = (e) => {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * (pad.width / r.width), (e.clientY - r.top) * (pad.height / r.height)];
  };
  pad.addEventListener("pointerdown", (e) => {
    drawing = true;
    pad.setPointerCapture(e.pointerId);
    ctx.beginPath();
    ctx.moveTo(...point(e));
  });
  pad.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.lineTo(...point(e));
    ctx.stroke();
  });
  const stop = () => { drawing = false; };
  pad.addEventListener("pointerup", stop);
  pad.addEventListener("pointercancel", stop);

  $("clear").addEventListener("click", () => { clear(); show(null); });
  $("predict-image").addEventListener("click", () => {
    pad.toBlob((blob) => sendFile(blob, "drawing.png"), "image/png");
  });
  $("file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    preview(file, ctx, pad);
    await sendFile(file, file.name);
    e.target.value = "";
  });
}

function preview(file, ctx, pad) {
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => { ctx.drawImage(img, 0, 0, pad.width, pad.height); URL.revokeObjectURL(url); };
  img.onerror = () => URL.revokeObjectURL(url);
  img.src = url;
}

function setUpText() {
  $("text-input").hidden = false;
  $("predict-text").addEventListener("click", () => {
    post({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text: $("text").value }) });
  });
}

function setUpTable(columns) {
  // a table model takes one row as JSON: the columns it was trained on, with their values
  $("text-input").hidden = false;
  $("text-label").textContent = `A row as JSON: {"column": value, ...} with the columns ${columns.join(", ")}`;
  $("predict-text").addEventListener("click", () => {
    let row;
    try {
      row = JSON.parse($("text").value);
    } catch (err) {
      $("error").textContent = `not JSON: ${err.message}`;
      return;
    }
    post({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ row }) });
  });
}

function sendFile(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  return post({ method: "POST", body: form });
}

async function post(request) {
  $("error").textContent = "";
  try {
    const response = await fetch(`/predict?top_k=${TOP_K}`, request);
    const body = await response.json();
    if (!response.ok) {
      show(null);
      $("error").textContent = body.error || `error ${response.status}`;
      return;
    }
    show(body.predictions[0]);
  } catch (err) {
    $("error").textContent = `the server did not answer (${err.message})`;
  }
}

function show(prediction) {
  const bars = $("bars");
  bars.replaceChildren();
  $("note").textContent = prediction && prediction.note ? prediction.note : "";
  if (!prediction) return;
  if (prediction.value) {
    const li = document.createElement("li");
    li.textContent = `value: ${prediction.value.map((v) => v.toFixed(4)).join(", ")}`;
    bars.append(li);
    return;
  }
  for (const { class: label, probability } of prediction.top) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(probability * 100).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "probability";
    value.textContent = `${(probability * 100).toFixed(1)}%`;
    li.append(name, track, value);
    bars.append(li);
  }
}

start().catch((err) => { $("error").textContent = `could not load the model info (${err.message})`; });
