// The open video: live status, progress and elapsed time; when completed, the inline
// player and downloads; cancel, remix and delete.

import { ApiError, STATUS_TEXT, api, contentUrl, followVideo, isFinished } from "./api.js";
import { $, charCount, fieldErrors, h } from "./dom.js";

const TRANSPORT_TEXT = { stream: "live updates (event stream)", polling: "updates by polling" };

function elapsedText(video) {
  const end = video.completed_at ?? (isFinished(video) ? null : Date.now() / 1000);
  if (end === null) return "";
  const seconds = Math.max(0, end - video.created_at);
  const minutes = Math.floor(seconds / 60);
  const rest = (seconds % 60).toFixed(minutes ? 0 : 1);
  return minutes ? `${minutes} min ${rest} s` : `${rest} s`;
}

const button = (id, text, onclick, kind = "") =>
  h("button", { type: "button", class: `ghost ${kind}`.trim(), id, onclick }, text);

const DOWNLOADS = [
  ["thumbnail", "thumbnail.webp", "thumbnail (WEBP)"],
  ["spritesheet", "spritesheet.jpg", "spritesheet (JPEG)"],
];

export class JobView {
  constructor({ onCreated, onChanged, onDeleted, pollMs }) {
    this.onCreated = onCreated;
    this.onChanged = onChanged;
    this.onDeleted = onDeleted;
    this.pollMs = pollMs;
    this.root = $("job-view");
    this.video = null;
    this.follow = null;
    this.timer = null;
    this.blobs = [];
  }

  /** Show a video, and follow it until it finishes when it has not yet. */
  open(video) {
    this.close();
    this.video = video;
    this.build(video);
    this.update(video);
    $("job-empty").hidden = true;
    this.root.hidden = false;
    window.history.replaceState(null, "", `#${video.id}`);
    if (!isFinished(video)) this.watch(video.id);
  }

  close() {
    this.follow?.abort();
    this.follow = null;
    clearInterval(this.timer);
    for (const url of this.blobs) URL.revokeObjectURL(url);
    this.blobs = [];
    this.video = null;
    this.root.hidden = true;
    this.root.replaceChildren();
    $("job-empty").hidden = false;
  }

  build(video) {
    this.parts = {
      status: h("span", { class: "badge", id: "job-status" }),
      progress: h("progress", { id: "job-progress", max: 100, value: 0, "aria-label": "Progress" }),
      percent: h("span", { class: "percent", id: "job-percent" }),
      elapsed: h("span", { id: "job-elapsed" }),
      transport: h("span", { id: "job-transport" }),
      facts: h("dl", { class: "facts" }),
      error: h("p", { class: "job-error", id: "job-error", role: "alert" }),
      result: h("div", { class: "result", id: "job-result" }),
      cancel: button("job-cancel", "Cancel", () => this.cancel()),
      remix: button("job-remix", "Remix", () => this.toggleRemix()),
      remove: button("job-delete", "Delete", () => this.remove(), "danger"),
      remixForm: this.remixForm(video),
    };
    const p = this.parts;
    this.root.replaceChildren(
      h("div", { class: "job-head" }, h("code", { class: "job-id", id: "job-id" }, video.id), p.status),
      h("div", { class: "progress-row" }, p.progress, p.percent),
      h("p", { class: "hint job-meta" }, "Elapsed ", p.elapsed, " · ", p.transport),
      p.facts,
      video.prompt ? h("p", { class: "job-prompt" }, video.prompt) : null,
      p.error,
      p.result,
      h("div", { class: "actions" }, p.cancel, p.remix, p.remove),
      p.remixForm,
    );
  }

  remixForm(video) {
    const prompt = h("textarea", { id: "remix-prompt", rows: 2, "aria-describedby": "remix-prompt-error" });
    prompt.value = video.prompt || "";
    return h("form", { class: "remix", id: "remix-form", hidden: true, novalidate: true,
      onsubmit: (event) => { event.preventDefault(); this.remix(prompt.value); } },
      h("label", { for: "remix-prompt" }, "New prompt for the remix (same frames, audio, seed and settings)"),
      prompt,
      h("p", { class: "field-error", id: "remix-prompt-error", "data-field": "remix-prompt",
        "aria-live": "polite" }),
      h("div", { class: "actions" },
        h("button", { type: "submit", id: "remix-submit" }, "Start remix"),
        h("button", { type: "button", class: "ghost", onclick: () => this.toggleRemix(false) }, "Close")),
    );
  }

  /** Reflect a newer state of the open video (progress never goes back). */
  update(video, transport) {
    if (!this.video || video.id !== this.video.id) return;
    const progress = Math.max(video.progress, isFinished(video) ? 0 : this.video.progress);
    this.video = { ...video, progress };
    const p = this.parts;
    const error = video.error ? ` — ${video.error.code}` : "";
    p.status.textContent = STATUS_TEXT[video.status] + error;
    p.status.dataset.status = video.status;
    p.progress.value = progress;
    p.percent.textContent = `${progress}%`;
    if (transport) {
      p.transport.textContent = TRANSPORT_TEXT[transport];
      this.root.dataset.transport = transport;
    } else if (!p.transport.textContent) {
      p.transport.textContent = isFinished(video) ? "finished" : "";
    }
    p.error.textContent = video.error ? `${video.error.code}: ${video.error.message}` : "";
    this.showFacts(this.video);
    this.tick();
    p.cancel.hidden = isFinished(video);
    p.remix.hidden = video.status !== "completed";
    if (video.status === "completed" && !p.result.childElementCount) this.showResult(video);
  }

  tick() {
    const show = () => { this.parts.elapsed.textContent = elapsedText(this.video) || "—"; };
    show();
    clearInterval(this.timer);
    if (!isFinished(this.video)) this.timer = setInterval(show, 250);
  }

  showFacts(video) {
    const facts = [
      ["Model", `${video.model} (${video.engine} engine)`],
      ["Size", video.width ? `${video.size} → ${video.width}×${video.height}` : video.size],
      ["Seconds", video.seconds],
      ["Seed", String(video.seed)],
      video.fps ? ["Frame rate", `${+video.fps.toFixed(2)} fps`] : null,
      video.remixed_from_video_id ? ["Remix of", video.remixed_from_video_id] : null,
      ["Created", new Date(video.created_at * 1000).toLocaleString()],
    ].filter(Boolean);
    const rows = facts.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]);
    this.parts.facts.replaceChildren(...rows);
  }

  async showResult(video) {
    const result = this.parts.result;
    const player = h("video", { id: "job-video", controls: true, playsinline: true,
      preload: "metadata", "aria-label": "The finished video" });
    const links = h("p", { class: "downloads" }, "Download: ");
    result.replaceChildren(player, links);
    // The signed `video_url` plays without the key (and with ranges); without one, a blob.
    const src = video.video_url || (await this.blob(video.id, "video"));
    if (!src || this.video?.id !== video.id) return;
    player.src = src;
    const link = (variant, href, name, label) =>
      h("a", { href, download: `${video.id}-${name}`, class: "download", id: `download-${variant}` }, label);
    links.append(link("video", src, "video.mp4", "video (MP4)"));
    for (const [variant, name, label] of DOWNLOADS) {
      const url = await this.blob(video.id, variant);
      if (this.video?.id !== video.id) return;
      if (variant === "thumbnail" && url) player.poster = url;
      if (url) links.append(" · ", link(variant, url, name, label));
    }
  }

  async blob(id, variant) {
    try {
      const url = await contentUrl(id, variant);
      this.blobs.push(url);
      return url;
    } catch (error) {
      this.parts.error.textContent = `The ${variant} could not be loaded: ${error.message}`;
      return null;
    }
  }

  async watch(id) {
    const follow = new AbortController();
    this.follow = follow;
    try {
      const update = (video, transport) => this.update(video, transport);
      const done = await followVideo(id, update, { signal: follow.signal, pollMs: this.pollMs() });
      this.onChanged(done);
    } catch (error) {
      if (error.name === "AbortError") return;
      if (this.video?.id !== id) return;
      this.parts.error.textContent = error instanceof ApiError && error.status === 404
        ? "This video no longer exists." : `Updates stopped: ${error.message}`;
      if (error instanceof ApiError && error.status === 401) fieldErrors.show("apikey", error.message);
    }
  }

  async cancel() {
    const id = this.video.id;
    try {
      this.update(await api(`v1/videos/${id}/cancel`, { method: "POST" }));
    } catch (error) {
      this.parts.error.textContent = error.message;
    }
  }

  toggleRemix(show = this.parts.remixForm.hidden) {
    this.parts.remixForm.hidden = !show;
    if (show) $("remix-prompt").focus();
  }

  async remix(prompt) {
    fieldErrors.clear("remix-prompt");
    if (!charCount(prompt.trim())) return void fieldErrors.show("remix-prompt", "A remix needs a prompt.");
    try {
      const video = await api(`v1/videos/${this.video.id}/remix`, { method: "POST", json: { prompt } });
      this.onCreated(video);
    } catch (error) {
      const field = error instanceof ApiError && error.param === "prompt" ? "remix-prompt" : null;
      if (field) fieldErrors.show(field, error.message);
      else this.parts.error.textContent = error.message;
    }
  }

  /** Delete needs a second press within a few seconds: it cannot be undone. */
  async remove() {
    const button = this.parts.remove;
    if (!button.dataset.armed) {
      button.dataset.armed = "1";
      button.textContent = "Press again to delete";
      setTimeout(() => { delete button.dataset.armed; button.textContent = "Delete"; }, 4000);
      return;
    }
    const id = this.video.id;
    try {
      await api(`v1/videos/${id}`, { method: "DELETE" });
      this.close();
      window.history.replaceState(null, "", window.location.pathname);
      this.onDeleted(id);
    } catch (error) {
      this.parts.error.textContent = error.message;
    }
  }
}
