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

// Asks the person before a sign-in link replaces the session this browser has (the bff
// refuses a silent swap): a modal dialog naming both; true only for "Switch".
export function confirmSwitch(current, next) {
  const who = (s) => `${s.sub} (${s.role})`;
  const dialog = el("dialog", { id: "switch-dialog" });
  dialog.setAttribute("aria-labelledby", "switch-text");
  const form = el("form", { method: "dialog" },
    el("p", { id: "switch-text", textContent:
      `You are signed in as ${who(current)}. This link signs you in as ${who(next)} instead. ` +
      "Switch only if you asked for this link." }),
    el("div", { className: "actions" },
      el("button", { value: "stay", textContent: `Stay as ${current.sub}` }),
      el("button", { value: "switch", id: "switch-go", textContent: "Switch" })));
  dialog.append(form);
  document.body.append(dialog);
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const yes = dialog.returnValue === "switch";
      dialog.remove();
      resolve(yes);
    }, { once: true });
  });
}
