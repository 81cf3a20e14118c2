// Ask the server for a grid of generated images and show it.
"use strict";

const form = document.getElementById("form");
const grid = document.getElementById("grid");
const status = document.getElementById("status");

fetch("/info").then((r) => r.json()).then((info) => {
  document.getElementById("title").textContent = `GAN samples: ${info.run}`;
  if (!info.classes) document.getElementById("label").disabled = true;
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = { n: Number(document.getElementById("n").value), seed: Number(document.getElementById("seed").value) };
  const label = document.getElementById("label").value;
  if (label !== "") body.label = Number(label);
  status.textContent = "generating...";
  const response = await postJSON("/predict", body, status);
  if (response === null) return;
  grid.src = URL.createObjectURL(await response.blob());
  grid.hidden = false;
  status.textContent = "";
});
