// The create form: every field of `POST /v1/videos`, checked against the server's own
// limits (GET /playground/config) before sending, and the server's errors shown beside
// the field its `param` names.

import { ApiError, request } from "./api.js";
import { $, charCount, fieldErrors, formatBytes } from "./dom.js";
import { MediaInput } from "./media.js";

const MEDIA_TYPES = ["first_frame", "last_frame", "driving_audio"];
const SCALAR_FIELDS = new Set([
  "model", "prompt", "negative_prompt", "size", "seconds", "seed", "watermark", "prompt_extend",
]);

/** The field a server error is about: `media[1].url` -> the media sent second. */
export function fieldOf(param, mediaOrder = []) {
  if (!param) return "general";
  const media = /^media\[(\d+)\]/.exec(param);
  if (media) return mediaOrder[Number(media[1])] || "media";
  if (param === "input_reference") return "first_frame";
  if (MEDIA_TYPES.includes(param) || param === "media") return param;
  const top = param.split(/[.[]/)[0];
  return SCALAR_FIELDS.has(top) ? top : "general";
}

/** Where an ApiError belongs: the key field for 401, else the field its param names. */
export function showApiError(error, mediaOrder) {
  if (error instanceof ApiError && error.status === 401) return fieldErrors.show("apikey", error.message);
  const field = error instanceof ApiError ? fieldOf(error.param, mediaOrder) : "general";
  return fieldErrors.show(field, error.message || String(error));
}

const isInteger = (text) => /^\d+$/.test(text.trim());

export class CreateForm {
  constructor({ onCreated }) {
    this.onCreated = onCreated;
    this.config = null;
    this.media = MEDIA_TYPES.map(
      (type) => new MediaInput($(type), { required: type !== "driving_audio" }),
    );
    $("size").addEventListener("change", () => { $("custom-size").hidden = $("size").value !== "custom"; });
    for (const id of ["prompt", "negative_prompt"]) $(id).addEventListener("input", () => this.count(id));
    for (const id of SCALAR_FIELDS) {
      $(id)?.addEventListener("input", () => fieldErrors.clear(id));
    }
    for (const id of ["width", "height"]) $(id).addEventListener("input", () => fieldErrors.clear("size"));
    $("create").addEventListener("submit", (event) => { event.preventDefault(); this.submit(); });
  }

  /** Apply the server's limits: options, ranges, hints, and the media checks. */
  applyConfig(config) {
    this.config = config;
    const size = $("size");
    const chosen = size.value;
    for (const option of [...size.options]) if (option.value !== "custom") option.remove();
    for (const tier of config.size.tiers) size.insertBefore(new Option(tier, tier), size.lastElementChild);
    size.value = config.size.tiers.includes(chosen) ? chosen : config.size.default;
    const { pixel_side_min: low, pixel_side_max: high, pixel_step: step } = config.size;
    for (const id of ["width", "height"]) Object.assign($(id), { min: low, max: high, step });
    $("size-hint").textContent =
      `Tiers keep the first frame's aspect. Custom sides: multiples of ${step}, ${low}–${high} px.`;
    const seconds = $("seconds");
    Object.assign(seconds, { min: config.seconds.min, max: config.seconds.max });
    if (!seconds.value) seconds.value = config.seconds.default;
    $("seconds-hint").textContent = `${config.seconds.min}–${config.seconds.max} s`;
    Object.assign($("seed"), { min: config.seed.min, max: config.seed.max });
    const { image, audio } = config;
    const imageText = `JPEG, PNG, BMP or WEBP · sides ${image.min_side}–${image.max_side} px`
      + ` · up to ${formatBytes(image.max_bytes)}`;
    const audioText = `WAV, MP3, AAC, FLAC or OGG · ${audio.min_seconds}–${audio.max_seconds} s`
      + ` · up to ${formatBytes(audio.max_bytes)}`;
    for (const input of this.media) {
      input.setLimits(input.kind === "image" ? image : audio);
      input.empty.title = input.kind === "image" ? imageText : audioText;
    }
    $("limits-note").textContent = `Images: ${imageText}. Audio: ${audioText}.`;
    this.count("prompt");
    this.count("negative_prompt");
  }

  setModels(names, preferred) {
    const select = $("model");
    const current = select.value;
    select.replaceChildren(...names.map((name) => new Option(name, name)));
    select.value = names.includes(current) ? current : names.includes(preferred) ? preferred : names[0];
  }

  limitOf(id) {
    return id === "prompt" ? this.config?.prompt_max_chars : this.config?.negative_prompt_max_chars;
  }

  count(id) {
    const limit = this.limitOf(id);
    const used = charCount($(id).value);
    $(`${id}-count`).textContent = limit ? `${used} / ${limit}` : "";
    $(`${id}-count`).classList.toggle("over", Boolean(limit && used > limit));
  }

  sizeValue() {
    const size = $("size").value;
    return size === "custom" ? `${$("width").value.trim()}x${$("height").value.trim()}` : size;
  }

  /** [field, message] for everything the server would refuse that the page can tell. */
  async problems() {
    const found = [];
    const config = this.config;
    for (const input of this.media) {
      const problem = await input.check();
      if (problem) found.push([input.type, problem]);
    }
    if (!config) return found;
    for (const id of ["prompt", "negative_prompt"]) {
      const used = charCount($(id).value);
      const limit = this.limitOf(id);
      if (used > limit) found.push([id, `At most ${limit} characters (this is ${used}).`]);
    }
    const seconds = $("seconds").value;
    const { min, max } = config.seconds;
    if (!isInteger(seconds) || +seconds < min || +seconds > max) {
      found.push(["seconds", `Seconds must be a whole number from ${min} to ${max}.`]);
    }
    const seed = $("seed").value.trim();
    if (seed && (!isInteger(seed) || +seed > config.seed.max)) {
      found.push(["seed", `The seed must be a whole number from ${config.seed.min} to ${config.seed.max}.`]);
    }
    if ($("size").value === "custom") {
      const problem = this.customSizeProblem();
      if (problem) found.push(["size", problem]);
    }
    const upload = this.media.reduce((sum, input) => sum + (input.file?.size || 0), 0);
    if (upload > config.max_upload_bytes) {
      const most = formatBytes(config.max_upload_bytes);
      found.push(["general", `The files add up to ${formatBytes(upload)}; one request takes at most ${most}.`]);
    }
    return found;
  }

  customSizeProblem() {
    const { pixel_side_min: low, pixel_side_max: high, pixel_step: step } = this.config.size;
    const area = this.config.size.max_pixel_area;
    const sides = [$("width").value, $("height").value];
    if (!sides.every((side) => isInteger(side) && +side >= low && +side <= high && +side % step === 0)) {
      return `Each side must be a multiple of ${step} from ${low} to ${high} pixels.`;
    }
    if (+sides[0] * +sides[1] > area) return `At most ${area.toLocaleString("en")} pixels in area.`;
    return null;
  }

  /** The multipart body (what the openai SDK sends) and the order its media URLs go in. */
  body() {
    const form = new FormData();
    const text = (id) => $(id).value.trim();
    form.append("model", $("model").value);
    if (text("prompt")) form.append("prompt", $("prompt").value);
    if (text("negative_prompt")) form.append("negative_prompt", $("negative_prompt").value);
    form.append("size", this.sizeValue());
    form.append("seconds", text("seconds"));
    if (text("seed")) form.append("seed", text("seed"));
    form.append("watermark", String($("watermark").checked));
    form.append("prompt_extend", String($("prompt_extend").checked));
    const mediaOrder = [];
    for (const input of this.media) {
      const source = input.source();
      if (source?.file) {
        form.append(input.type, source.file, source.file.name);
      } else if (source?.url) {
        // media[i].url errors name the i-th URL entry: remember which input it was.
        mediaOrder.push(input.type);
        form.append("media[][type]", input.type);
        form.append("media[][url]", source.url);
      }
    }
    return { form, mediaOrder };
  }

  async submit() {
    const button = $("submit");
    if (button.disabled) return;
    fieldErrors.clearAll();
    button.disabled = true;
    button.textContent = "Checking…";
    try {
      const problems = await this.problems();
      if (problems.length) {
        for (const [field, message] of problems) fieldErrors.show(field, message);
        document.querySelector('form [aria-invalid="true"]')?.focus();
        return;
      }
      button.textContent = "Sending…";
      const { form, mediaOrder } = this.body();
      try {
        const { body } = await request("v1/videos", { method: "POST", form });
        fieldErrors.clear("apikey");
        this.onCreated(body);
      } catch (error) {
        showApiError(error, mediaOrder);
      }
    } finally {
      button.disabled = false;
      button.textContent = "Generate";
    }
  }
}
