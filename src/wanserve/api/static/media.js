// The drop zones of the first frame, last frame and driving audio: a file (dropped or
// chosen) or a URL, a preview, and the server's limits checked before anything is sent.
// Previews are made locally (object and data: URLs): a typed http(s) URL is never loaded
// by the page, only fetched by the server when the video is created.

import { fieldErrors, formatBytes, formatSeconds } from "./dom.js";

const LABELS = { first_frame: "first frame", last_frame: "last frame", driving_audio: "audio" };

function measureImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve({ width: image.naturalWidth, height: image.naturalHeight });
    image.onerror = () => reject(new Error("unreadable"));
    image.src = url;
  });
}

function measureAudio(player, url) {
  return new Promise((resolve, reject) => {
    const done = () => {
      player.removeEventListener("loadedmetadata", loaded);
      player.removeEventListener("error", failed);
    };
    const loaded = () => { done(); resolve({ duration: player.duration }); };
    const failed = () => { done(); reject(new Error("unreadable")); };
    player.addEventListener("loadedmetadata", loaded);
    player.addEventListener("error", failed);
    player.src = url;
  });
}

/** What the server would refuse about a measured file, or null. */
function imageProblem(limits, bytes, size) {
  if (bytes !== null && bytes > limits.max_bytes) {
    return `The image is ${formatBytes(bytes)}; the server takes at most ${formatBytes(limits.max_bytes)}.`;
  }
  if (!size) return null;
  const { width, height } = size;
  if (Math.min(width, height) < limits.min_side || Math.max(width, height) > limits.max_side) {
    return `The image is ${width}×${height} pixels; each side must be from ${limits.min_side}`
      + ` to ${limits.max_side} pixels.`;
  }
  if (Math.max(width, height) / Math.min(width, height) > limits.max_aspect) {
    const ratio = limits.max_aspect;
    return `The image is ${width}×${height} pixels; its aspect ratio must be between 1:${ratio}`
      + ` and ${ratio}:1.`;
  }
  return null;
}

function audioProblem(limits, bytes, duration) {
  if (bytes !== null && bytes > limits.max_bytes) {
    return `The audio is ${formatBytes(bytes)}; the server takes at most ${formatBytes(limits.max_bytes)}.`;
  }
  if (duration !== null && (duration < limits.min_seconds || duration > limits.max_seconds)) {
    return `The audio is ${formatSeconds(duration)} long; it must be from ${limits.min_seconds}`
      + ` to ${limits.max_seconds} s.`;
  }
  return null;
}

/** One media input (a `fieldset.drop`): file or URL, preview, limit checks. */
export class MediaInput {
  constructor(fieldset, { required }) {
    this.type = fieldset.id;
    this.kind = fieldset.dataset.kind;
    this.required = required;
    this.limits = null;
    this.zone = fieldset.querySelector("[data-zone]");
    this.fileInput = fieldset.querySelector("input[type=file]");
    this.urlInput = fieldset.querySelector("input[type=url]");
    this.preview = fieldset.querySelector("[data-preview]");
    this.thumb = fieldset.querySelector("[data-thumb]");
    this.player = fieldset.querySelector("[data-player]");
    this.info = fieldset.querySelector("[data-info]");
    this.empty = fieldset.querySelector("[data-empty]");
    this.clearButton = fieldset.querySelector("[data-clear]");
    this.file = null;
    this.bytes = null;
    this.measured = null;
    this.problem = null;
    this.ready = Promise.resolve();
    this.objectUrl = null;
    this.wire();
  }

  wire() {
    this.fileInput.addEventListener("change", () => this.setFile(this.fileInput.files[0] || null));
    this.urlInput.addEventListener("input", () => this.setUrl(this.urlInput.value.trim()));
    this.clearButton.addEventListener("click", () => { this.clear(); this.fileInput.focus(); });
    const over = (event) => {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      this.zone.classList.add("over");
    };
    this.zone.addEventListener("dragenter", over);
    this.zone.addEventListener("dragover", over);
    this.zone.addEventListener("dragleave", () => this.zone.classList.remove("over"));
    this.zone.addEventListener("drop", (event) => {
      event.preventDefault();
      this.zone.classList.remove("over");
      const file = event.dataTransfer.files[0];
      if (!file) return;
      // Keep the file input the one source of truth, as if the file had been chosen.
      const transfer = new DataTransfer();
      transfer.items.add(file);
      this.fileInput.files = transfer.files;
      this.setFile(file);
    });
  }

  setLimits(limits) {
    this.limits = limits;
    this.recheck();
  }

  clear() {
    this.fileInput.value = "";
    this.urlInput.value = "";
    this.setFile(null);
  }

  /** A chosen or dropped file (null clears): preview it, measure it, check it. */
  setFile(file) {
    this.file = file;
    if (file) this.urlInput.value = "";
    this.showPreview(file ? URL.createObjectURL(file) : null, file?.size ?? null);
  }

  setUrl(url) {
    if (url) {
      this.file = null;
      this.fileInput.value = "";
    }
    const local = this.kind === "image" ? /^data:image\//i : /^data:audio\//i;
    this.showPreview(local.test(url) ? url : null, null);
    if (url && !local.test(url)) {
      this.info.textContent = /^https?:\/\//i.test(url)
        ? "The server fetches this URL when you press Generate."
        : "";
    }
    this.problem = url && !/^(https?:\/\/|data:)/i.test(url)
      ? "The URL must start with https://, http:// or data:."
      : null;
    this.report();
  }

  showPreview(url, bytes) {
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = url?.startsWith("blob:") ? url : null;
    this.measured = null;
    this.bytes = bytes;
    this.problem = null;
    this.info.textContent = "";
    this.preview.hidden = !url;
    this.empty.hidden = Boolean(this.file);
    this.clearButton.hidden = !this.file && !this.urlInput.value;
    this.zone.classList.toggle("filled", Boolean(url));
    if (!url) {
      if (this.thumb) this.thumb.removeAttribute("src");
      if (this.player) this.player.removeAttribute("src");
      this.ready = Promise.resolve();
      this.report();
      return;
    }
    const measuring = this.kind === "image"
      ? measureImage(url).then((size) => { this.thumb.src = url; return size; })
      : measureAudio(this.player, url);
    this.ready = measuring.then(
      (measured) => { this.measured = measured; },
      () => { this.measured = "unreadable"; },
    ).then(() => this.recheck());
  }

  /** Re-run the checks (new limits, or a measurement that just finished). */
  recheck() {
    if (this.bytes === null && this.measured === null) return this.report();
    const known = this.measured && this.measured !== "unreadable" ? this.measured : null;
    const details = [];
    if (this.file) details.push(this.file.name);
    if (known?.width) details.push(`${known.width} × ${known.height} px`);
    if (known?.duration !== undefined) details.push(formatSeconds(known.duration));
    if (this.bytes !== null) details.push(formatBytes(this.bytes));
    if (this.measured === "unreadable") details.push("no preview: the server will check it");
    this.info.textContent = details.join(" · ");
    this.problem = null;
    if (this.limits) {
      this.problem = this.kind === "image"
        ? imageProblem(this.limits, this.bytes, known)
        : audioProblem(this.limits, this.bytes, known?.duration ?? null);
    }
    this.report();
  }

  report() {
    if (this.problem) fieldErrors.show(this.type, this.problem);
    else fieldErrors.clear(this.type);
  }

  /** What is wrong before sending (after any measuring in flight), or null. */
  async check() {
    await this.ready;
    if (this.problem) return this.problem;
    if (this.required && !this.file && !this.urlInput.value.trim()) {
      return `Choose a ${LABELS[this.type]}: drop a file, pick one, or give a URL.`;
    }
    return null;
  }

  /** {file} or {url} or null (nothing chosen). */
  source() {
    if (this.file) return { file: this.file };
    const url = this.urlInput.value.trim();
    return url ? { url } : null;
  }
}
