// The key's videos from `GET /v1/videos` (newest first), a page at a time, with
// thumbnails; choosing one opens it.

import { STATUS_TEXT, api, contentUrl } from "./api.js";
import { $, h } from "./dom.js";

const PAGE_SIZE = 8;

export class History {
  constructor({ onOpen }) {
    this.onOpen = onOpen;
    this.cursors = [null]; // `after` of each page seen so far; the last is the current page
    this.thumbs = new Map(); // video id -> object URL of its thumbnail
    this.current = null;
    this.loading = null;
    $("history-refresh").addEventListener("click", () => this.load());
    $("history-older").addEventListener("click", () => this.load(this.lastId, +1));
    $("history-newer").addEventListener("click", () => this.load(null, -1));
  }

  /** Reload the current page (or move one page older / newer). */
  async load(after = null, step = 0) {
    if (step > 0) this.cursors.push(after);
    if (step < 0 && this.cursors.length > 1) this.cursors.pop();
    const cursor = this.cursors.at(-1);
    const query = new URLSearchParams({ limit: PAGE_SIZE, order: "desc" });
    if (cursor) query.set("after", cursor);
    $("history-error").textContent = "";
    const loading = api(`v1/videos?${query}`);
    this.loading = loading;
    let page;
    try {
      page = await loading;
    } catch (error) {
      if (this.loading !== loading) return;
      if (cursor && error.param === "after") return this.reset(); // that job was deleted
      $("history-error").textContent = `History unavailable: ${error.message}`;
      this.render({ data: [], has_more: false });
      return;
    }
    if (this.loading !== loading) return; // a newer load is under way
    if (!page.data.length && this.cursors.length > 1) return this.load(null, -1);
    this.render(page);
  }

  reset() {
    this.cursors = [null];
    return this.load();
  }

  render(page) {
    this.lastId = page.last_id;
    const list = $("history-list");
    list.replaceChildren(...page.data.map((video) => this.item(video)));
    $("history-empty").hidden = page.data.length > 0 || this.cursors.length > 1;
    $("history-older").disabled = !page.has_more;
    $("history-newer").disabled = this.cursors.length <= 1;
    const paged = this.cursors.length > 1 || page.has_more;
    $("history-page").textContent = paged ? `Page ${this.cursors.length}` : "";
    this.markCurrent(this.current);
  }

  item(video) {
    const status = STATUS_TEXT[video.status] + (video.error ? ` (${video.error.code})` : "");
    const thumb = h("span", { class: "thumb", "data-status": video.status },
      h("span", { class: "thumb-status" }, STATUS_TEXT[video.status]));
    if (video.status === "completed") this.showThumb(video.id, thumb);
    const when = new Date(video.created_at * 1000)
      .toLocaleString([], { dateStyle: "short", timeStyle: "short" });
    const label = video.prompt || "(no prompt)";
    const open = () => this.onOpen(video);
    return h("li", {},
      h("button", { type: "button", class: "history-item", "data-id": video.id, onclick: open },
        thumb,
        h("span", { class: "history-text" },
          h("span", { class: "history-prompt" }, label),
          h("span", { class: "history-meta" }, `${status} · ${video.size} · ${video.seconds} s · ${when}`))));
  }

  async showThumb(id, holder) {
    let url = this.thumbs.get(id);
    if (!url) {
      try {
        url = await contentUrl(id, "thumbnail");
      } catch {
        return; // expired or gone: the status text stays
      }
      this.thumbs.set(id, url);
    }
    holder.replaceChildren(h("img", { src: url, alt: "", class: "thumb-img" }));
  }

  /** Highlight the open video's entry. */
  markCurrent(id) {
    this.current = id;
    for (const button of document.querySelectorAll(".history-item")) {
      if (button.dataset.id === id) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
  }

  forget(id) {
    const url = this.thumbs.get(id);
    if (url) URL.revokeObjectURL(url);
    this.thumbs.delete(id);
  }
}
