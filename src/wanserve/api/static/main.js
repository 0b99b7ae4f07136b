// Wiring: the key, the server's limits and models, the form, the open video, the history.

import { ApiError, api, apiKey } from "./api.js";
import { $, fieldErrors } from "./dom.js";
import { CreateForm } from "./form.js";
import { History } from "./history.js";
import { JobView } from "./job.js";

let config = null;

const historyList = new History({ onOpen: (video) => openVideo(video) });
const job = new JobView({
  pollMs: () => config?.poll_after_ms ?? 1000,
  onCreated: (video) => { openVideo(video); historyList.reset(); },
  onChanged: () => historyList.load(),
  onDeleted: (id) => { historyList.forget(id); historyList.load(); },
});
const form = new CreateForm({ onCreated: (video) => { openVideo(video); historyList.reset(); } });

function openVideo(video) {
  job.open(video);
  historyList.markCurrent(video.id);
}

async function loadConfig() {
  try {
    config = await api("playground/config");
    form.applyConfig(config);
    fieldErrors.clear("general");
  } catch (error) {
    fieldErrors.show("general", `The server's limits could not be loaded: ${error.message}`);
  }
}

async function loadModels() {
  try {
    const models = await api("v1/models");
    form.setModels(models.data.map((model) => model.id), config?.default_model);
    fieldErrors.clear("apikey");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      fieldErrors.show("apikey", apiKey.get() ? error.message : "This server needs an API key.");
    } else {
      fieldErrors.show("model", `Models could not be loaded: ${error.message}`);
    }
  }
}

async function openFromAddress() {
  const id = decodeURIComponent(window.location.hash.slice(1));
  if (!/^[\w-]+$/.test(id)) return;
  try {
    openVideo(await api(`v1/videos/${encodeURIComponent(id)}`));
  } catch {
    window.history.replaceState(null, "", window.location.pathname);
  }
}

async function useKey() {
  apiKey.set($("apikey").value.trim());
  await loadModels();
  await historyList.reset();
}

$("apikey").value = apiKey.get();
$("save-key").addEventListener("click", useKey);
$("apikey").addEventListener("keydown", (event) => {
  if (event.key === "Enter") { event.preventDefault(); useKey(); }
});
// A file dropped beside a zone must not navigate away from the page.
for (const type of ["dragover", "drop"]) window.addEventListener(type, (event) => event.preventDefault());

await loadConfig();
await Promise.all([loadModels(), historyList.load(), openFromAddress()]);
document.body.dataset.ready = "true";
