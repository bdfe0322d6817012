// What the pages share (decision 0025): the status line every page announces through
// (`#status`, aria-live), problem+json failures worded with the fields they name, and
// building elements without HTML strings.

export const $ = (id) => document.getElementById(id);

export function say(text, kind = "") {
  const s = $("status");
  s.textContent = text;
  s.className = kind;
}

// "<what>: <detail>", with the fields a 422 named.
export function failure(what, e) {
  const fields = (e.problem && e.problem.errors) || [];
  const detail = fields.length ? fields.map((f) => `${f.field} ${f.message}`).join("; ") : e.message;
  say(`${what}: ${detail}`, "bad");
}

export function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

// A table cell that names its column (`data-label`: a phone shows rows as cards).
export function cell(label, ...content) {
  const td = el("td", {}, ...content);
  td.dataset.label = label;
  return td;
}
