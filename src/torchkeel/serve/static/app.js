// The torchkeel web page: draw or upload an image (type a text, record a sound), POST it to /predict,
// show the top classes as bars. Plain JavaScript, no libraries, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const TOP_K = 5;
let modelSpec = null; // the run's data spec, from /info
let lastPicture = null; // the last image sent, for drawing a predicted mask or boxes over it
// box colours, one per class by its index in the run's classes (so a class keeps its colour);
// bright hues that the black label text reads on, unlike most photos' colours
const PALETTE = ["#ffd400", "#00e5ff", "#ff3df5", "#39ff14", "#ff8c00", "#a0a0ff", "#ff6b6b", "#ffffff"];

async function start() {
  const info = await (await fetch("/info")).json();
  const spec = info.spec;
  modelSpec = spec;
  const metric = info.metrics.accuracy !== undefined ? `, test accuracy ${(info.metrics.accuracy * 100).toFixed(1)}%` : "";
  $("model").textContent = `${info.model.name} on ${spec.name} (${spec.task}${metric})`;
  if (spec.kind === "image") setUpImage(spec);
  else if (spec.kind === "text") setUpText();
  else if (spec.kind === "table") setUpTable(info.columns || []);
  else if (spec.kind === "audio") setUpAudio();
}

// Sound: record with the Web Audio API (raw samples, written as a 16-bit PCM WAV here, since
// MediaRecorder's WebM/Opus is not a format the server reads) or upload a WAV/FLAC/OGG file.
function setUpAudio() {
  $("audio-input").hidden = false;
  let recording = null;
  $("record").addEventListener("click", async () => {
    if (recording) {
      const { context, stream, node, source, chunks } = recording;
      recording = null;
      $("record").textContent = "Record";
      node.disconnect();
      source.disconnect();
      stream.getTracks().forEach((t) => t.stop());
      const wav = encodeWav(chunks, context.sampleRate);
      await context.close();
      playBack(wav);
      await sendFile(wav, "recording.wav");
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const context = new AudioContext();
      const source = context.createMediaStreamSource(stream);
      const node = context.createScriptProcessor(4096, 1, 1);
      const chunks = [];
      node.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
      source.connect(node);
      node.connect(context.destination);
      recording = { context, stream, node, source, chunks };
      $("record").textContent = "Stop and predict";
      $("error").textContent = "";
    } catch (err) {
      $("error").textContent = `no microphone: ${err.message}`;
    }
  });
  $("sound-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    playBack(file);
    await sendFile(file, file.name);
  });
}

function playBack(blob) {
  const player = $("playback");
  player.src = URL.createObjectURL(blob);
  player.hidden = false;
}

function encodeWav(chunks, rate) {
  const length = chunks.reduce((n, c) => n + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * length));
  const text = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + 2 * length, true);
  text(8, "WAVEfmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, 2 * length, true);
  let at = 44;
  for (const chunk of chunks) {
    for (const v of chunk) {
      view.setInt16(at, Math.max(-1, Math.min(1, v)) * 0x7fff, true);
      at += 2;
    }
  }
  return new Blob([view], { type: "audio/wav" });
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
    lastPicture = pad;
    pad.toBlob((blob) => sendFile(blob, "drawing.png"), "image/png");
  });
  $("file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    await preview(file, ctx, pad); // lastPicture is the upload before its prediction is shown
    await sendFile(file, file.name);
    e.target.value = "";
  });
}

function preview(file, ctx, pad) {
  const url = URL.createObjectURL(file);
  const img = new Image();
  return new Promise((resolve) => {
    img.onload = () => {
      ctx.drawImage(img, 0, 0, pad.width, pad.height);
      lastPicture = img;
      URL.revokeObjectURL(url);
      resolve();
    };
    img.onerror = () => { lastPicture = null; URL.revokeObjectURL(url); resolve(); }; // the server says what is wrong
    img.src = url;
  });
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
  if (prediction.mask !== undefined) {  // a segmentation: the mask over the picture, the classes' shares
    showMask(prediction);
    return;
  }
  if (prediction.boxes !== undefined) {  // a detection: the boxes over the picture, their classes and scores
    showBoxes(prediction);
    return;
  }
  if (prediction.transcript !== undefined) {  // a speech recogniser's words
    const li = document.createElement("li");
    li.className = "transcript";
    li.textContent = prediction.transcript === "" ? "(no words heard)" : prediction.transcript;
    bars.append(li);
    return;
  }
  if (prediction.translation !== undefined) {  // a translator's sentence, in a second text box
    const box = document.createElement("textarea");
    box.id = "translation";
    box.readOnly = true;
    box.rows = 3;
    box.value = prediction.translation;
    bars.append(box);
    return;
  }
  addBars(bars, prediction.top.map(({ class: label, probability }) => [label, probability]));
}

function addBars(bars, rows, colours = []) {
  for (const [i, [label, probability]] of rows.entries()) {
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
    if (colours[i]) fill.style.background = colours[i];
    track.append(fill);
    const value = document.createElement("span");
    value.className = "probability";
    value.textContent = `${(probability * 100).toFixed(1)}%`;
    li.append(name, track, value);
    bars.append(li);
  }
}

// The mask is at the model's input size: draw the picture as the server resized it (the shorter
// side scaled to fit, then centre-cropped; or stretched), then the mask's colours at half opacity.
function showMask(prediction) {
  const [height, width] = prediction.size;
  const canvas = document.createElement("canvas");
  canvas.id = "overlay";
  const scale = Math.max(1, Math.floor(420 / Math.max(width, height)));
  canvas.width = width * scale;
  canvas.height = height * scale;
  const ctx = canvas.getContext("2d");
  if (lastPicture) {
    const w = lastPicture.naturalWidth || lastPicture.width, h = lastPicture.naturalHeight || lastPicture.height;
    const fit = modelSpec && modelSpec.extra.resize === "stretch" ? null : Math.max(canvas.width / w, canvas.height / h);
    if (fit === null) ctx.drawImage(lastPicture, 0, 0, canvas.width, canvas.height);
    else ctx.drawImage(lastPicture, (canvas.width - w * fit) / 2, (canvas.height - h * fit) / 2, w * fit, h * fit);
  }
  const mask = new Image();
  mask.onload = () => {
    ctx.globalAlpha = 0.5;
    ctx.imageSmoothingEnabled = false; // class colours stay exact at the borders
    ctx.drawImage(mask, 0, 0, canvas.width, canvas.height);
    canvas.dataset.drawn = "true";
  };
  mask.src = prediction.mask;
  const li = document.createElement("li");
  li.className = "picture";
  li.append(canvas);
  $("bars").append(li);
  addBars($("bars"), prediction.classes.map(({ class: label, fraction }) => [label, fraction]));
}

// The boxes are in the pixels of the picture as sent: draw it whole, scaled to fit about 420 px,
// then each box in its class's colour with a "class score" label on top of it.
function showBoxes(prediction) {
  const [height, width] = prediction.size;
  const scale = 420 / Math.max(width, height);
  const canvas = document.createElement("canvas");
  canvas.id = "overlay";
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  const ctx = canvas.getContext("2d");
  if (lastPicture) ctx.drawImage(lastPicture, 0, 0, canvas.width, canvas.height);
  const classes = (modelSpec && modelSpec.classes) || [];
  const colour = (label) => PALETTE[Math.max(0, classes.indexOf(label)) % PALETTE.length];
  ctx.lineWidth = 3;
  ctx.font = "bold 13px system-ui, sans-serif";
  ctx.textBaseline = "top";
  for (const { class: label, score, box } of prediction.boxes) {
    const [x1, y1, x2, y2] = box.map((v) => v * scale);
    ctx.strokeStyle = ctx.fillStyle = colour(label);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${label} ${score.toFixed(2)}`;
    const w = ctx.measureText(text).width + 6, h = 17;
    const top = y1 >= h ? y1 - h : y1; // above the box, or inside it at the picture's top edge
    ctx.fillRect(x1 - 1.5, top, w, h);
    ctx.fillStyle = "#000";
    ctx.fillText(text, x1 + 1.5, top + 2);
  }
  canvas.dataset.boxes = String(prediction.boxes.length);
  canvas.dataset.drawn = "true";
  const li = document.createElement("li");
  li.className = "picture";
  li.append(canvas);
  const bars = $("bars");
  bars.append(li);
  if (prediction.boxes.length === 0) {
    const none = document.createElement("li");
    none.className = "empty";
    none.textContent = "(no objects found)";
    bars.append(none);
    return;
  }
  const rows = prediction.boxes.map(({ class: label, score }) => [label, score]);
  addBars(bars, rows, prediction.boxes.map(({ class: label }) => colour(label)));
}

start().catch((err) => { $("error").textContent = `could not load the model info (${err.message})`; });
