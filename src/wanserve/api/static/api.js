// Talking to the server: the API key, JSON calls with OpenAI-shaped errors, content as
// blob URLs, and following a video live (Server-Sent Events) or by polling.
// Every URL is relative, so the page works behind a reverse proxy under a path prefix.

const KEY_STORAGE = "wanserve.apiKey";
const FINISHED = new Set(["completed", "failed"]);

export const isFinished = (video) => FINISHED.has(video.status);
export const STATUS_TEXT = {
  queued: "queued", in_progress: "in progress", completed: "completed", failed: "failed", unknown: "unknown",
};

export const apiKey = {
  get: () => localStorage.getItem(KEY_STORAGE) || "",
  set: (key) => (key ? localStorage.setItem(KEY_STORAGE, key) : localStorage.removeItem(KEY_STORAGE)),
};

/** An error answer: HTTP status plus OpenAI's {message, type, param, code}. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `The server answered ${status}.`);
    this.status = status;
    this.param = error?.param ?? null;
    this.code = error?.code ?? null;
  }
}

export function authHeaders() {
  const key = apiKey.get();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorOf(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: a proxy's page */ }
  return new ApiError(response.status, body?.error);
}

/** A JSON call; resolves {body, headers}, rejects with ApiError (status 0: no answer). */
export async function request(path, { method = "GET", json, form, signal } = {}) {
  const init = { method, signal, headers: authHeaders() };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (form) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { message: "The server could not be reached." });
  }
  if (!response.ok) throw await errorOf(response);
  return { body: await response.json(), headers: response.headers };
}

export const api = async (path, options) => (await request(path, options)).body;

/** A content variant fetched with the key, as an object URL the page can show or save. */
export async function contentUrl(videoId, variant) {
  const response = await fetch(`v1/videos/${videoId}/content?variant=${variant}`, {
    headers: authHeaders(),
  });
  if (!response.ok) throw await errorOf(response);
  return URL.createObjectURL(await response.blob());
}

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("aborted", "AbortError"));
    }, { once: true });
  });

// Set once the server shows it has no event stream route, so later jobs go straight to
// polling instead of asking again.
let streamMissing = false;

class StreamUnavailable extends Error {}

/** Parses one `text/event-stream` body, calling onEvent({id, event, data}) per event. */
export async function readEventStream(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { id: null, event: "message", data: [] };
  const dispatch = () => {
    if (event.data.length) onEvent({ ...event, data: event.data.join("\n") });
    event = { id: event.id, event: "message", data: [] };
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    // A CR at the very end may be the first half of a CRLF: keep it for the next chunk.
    const complete = buffer.endsWith("\r") ? buffer.slice(0, -1) : buffer;
    const lines = complete.split(/\r\n|\r|\n/);
    buffer = lines.pop() + (buffer.endsWith("\r") ? "\r" : "");
    for (const line of lines) {
      if (line === "") { dispatch(); continue; }
      if (line.startsWith(":")) continue; // a heartbeat comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") event.data.push(value);
      else if (field === "id") event.id = value;
      else if (field === "event") event.event = value;
    }
  }
}

// One connection to `GET /v1/videos/{id}/events`. EventSource cannot send the Bearer
// header, so the stream is read with fetch. Resolves the last video seen (or null) and
// the last event id, for a resume with Last-Event-ID.
async function streamOnce(id, onUpdate, signal, lastEventId) {
  const headers = { ...authHeaders(), Accept: "text/event-stream" };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const response = await fetch(`v1/videos/${id}/events`, { headers, signal, cache: "no-store" });
  const type = response.headers.get("content-type") || "";
  if (!response.ok || !type.startsWith("text/event-stream")) {
    const error = response.ok ? null : await errorOf(response);
    // A 404 that is not "no such video" means the route itself is missing.
    if ([404, 405, 501].includes(response.status) && error?.code !== "video_not_found") {
      streamMissing = true;
    }
    if (error?.code === "video_not_found") throw error;
    throw new StreamUnavailable(`event stream answered ${response.status}`);
  }
  let last = null;
  await readEventStream(response.body, (event) => {
    if (event.id) lastEventId = event.id;
    let video;
    try { video = JSON.parse(event.data); } catch { return; }
    if (video && video.id === id && typeof video.status === "string") {
      last = video;
      onUpdate(video, "stream");
    }
  });
  return { last, lastEventId };
}

async function followStream(id, onUpdate, signal) {
  let lastEventId = null;
  // A stream that ends before the terminal event (a restart, a proxy's time-out) is
  // resumed; one that keeps ending without news gives way to polling.
  for (let quiet = 0; quiet < 3; ) {
    const { last, lastEventId: seen } = await streamOnce(id, onUpdate, signal, lastEventId);
    if (last && isFinished(last)) return last;
    quiet = last ? 0 : quiet + 1;
    lastEventId = seen;
  }
  throw new StreamUnavailable("event stream keeps ending without news");
}

const RETRYABLE = (error) => error.status === 0 || error.status === 429 || error.status >= 500;

async function followByPolling(id, onUpdate, signal, fallbackMs) {
  let backoff = 500;
  for (;;) {
    let answer;
    try {
      answer = await request(`v1/videos/${id}`, { signal });
    } catch (error) {
      if (!(error instanceof ApiError) || !RETRYABLE(error)) throw error;
      await sleep(backoff, signal);
      backoff = Math.min(backoff * 2, 10_000);
      continue;
    }
    backoff = 500;
    onUpdate(answer.body, "polling");
    if (isFinished(answer.body)) return answer.body;
    const hinted = Number(answer.headers.get("openai-poll-after-ms"));
    await sleep(Math.min(Math.max(hinted || fallbackMs, 100), 10_000), signal);
  }
}

/**
 * Follows a video until it finishes, calling onUpdate(video, transport) on every change;
 * transport is "stream" or "polling". Resolves the finished video; rejects with an
 * ApiError (e.g. 404 once deleted) or an AbortError when `signal` aborts.
 */
export async function followVideo(id, onUpdate, { signal, pollMs = 1000 } = {}) {
  if (!streamMissing) {
    try {
      return await followStream(id, onUpdate, signal);
    } catch (error) {
      if (error.name === "AbortError" || error instanceof ApiError) throw error;
      // Anything else (no route, a network error, a stream cut short): poll instead.
    }
  }
  return followByPolling(id, onUpdate, signal, pollMs);
}
