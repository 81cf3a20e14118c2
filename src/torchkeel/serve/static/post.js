// POST a JSON body; on an error status show the server's message in `status` and return null.
async function postJSON(url, body, status) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    status.textContent = (await response.json()).error;
    return null;
  }
  return response;
}
