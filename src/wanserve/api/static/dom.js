// Small DOM helpers shared by the page's modules. Server text is only ever set as text,
// never parsed as HTML, so a prompt cannot inject markup.

export const $ = (id) => document.getElementById(id);

/** An element with attributes (on* keys become listeners) and children (strings are text). */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return element;
}

const MB = 1024 * 1024;

/** "20 MB", "1.5 MB", "96 KB", "512 bytes" (MB as the server counts them: 2^20 bytes). */
export function formatBytes(bytes) {
  if (bytes >= MB) return `${+(bytes / MB).toFixed(1)} MB`;
  if (bytes >= 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${bytes} bytes`;
}

export const formatSeconds = (seconds) => `${seconds.toFixed(1)} s`;

/** Text length as the server counts it (Unicode code points, not UTF-16 units). */
export const charCount = (text) => [...text].length;

function controlsOf(message) {
  return document.querySelectorAll(`[aria-describedby~="${message.id}"]`);
}

/** Messages shown beside the field they are about (`data-field` names it). */
export const fieldErrors = {
  show(field, text) {
    const message = document.querySelector(`.field-error[data-field="${field}"]`)
      || document.querySelector('.field-error[data-field="general"]');
    message.textContent = text;
    for (const control of controlsOf(message)) control.setAttribute("aria-invalid", "true");
    return message;
  },
  clear(field) {
    const message = document.querySelector(`.field-error[data-field="${field}"]`);
    if (!message) return;
    message.textContent = "";
    for (const control of controlsOf(message)) control.removeAttribute("aria-invalid");
  },
  clearAll() {
    for (const message of document.querySelectorAll("form .field-error[data-field]")) {
      this.clear(message.dataset.field);
    }
  },
};
