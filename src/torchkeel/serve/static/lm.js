// Stream a language model's text into the page as the server produces it (server-sent events
// read from a POST with fetch: EventSource only does GET).
"use strict";

const form = document.getElementById("form");
const status = document.getElementById("status");
const text = document.getElementById("text");

fetch("/info").then((r) => r.json()).then((info) => {
  document.getElementById("title").textContent = `Language model: ${info.run}`;
  document.getElementById("max_tokens").max = info.limits.max_tokens;
});

function request() {
  const body = { prompt: document.getElementById("prompt").value };
  for (const [key, number] of [["max_tokens", parseInt], ["temperature", Number], ["top_k", parseInt],
    ["top_p", Number], ["seed", parseInt]]) {
    const value = document.getElementById(key).value;
    if (value !== "") body[key] = number(value);
  }
  return body;
}

// each event is "data: {json}" lines ended by a blank line; returns the unfinished rest
function handleEvents(buffer) {
  const events = buffer.split("\n\n");
  for (const event of events.slice(0, -1)) {
    if (event.startsWith("event: done")) {
      status.textContent = "done";
      continue;
    }
    const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
    if (data) text.textContent += JSON.parse(data).text;
  }
  return events[events.length - 1];
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = request();
  document.getElementById("shown-prompt").textContent = body.prompt;
  text.textContent = "";
  status.textContent = "generating...";
  const response = await postJSON("/generate/stream", body, status);
  if (response === null) return;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = handleEvents(buffer + decoder.decode(value, { stream: true }));
  }
});
