// The embeddable in-app feed (decision 0029): one ES module, no framework, no CDN.
//
//   <script type="module" src="https://notify.example.com/widget/inbox.js"></script>
//   <notify-inbox></notify-inbox>
//   <script type="module">
//     document.querySelector("notify-inbox").connect({ token: "<a user token your backend minted>" });
//   </script>
//
// A bell with the unread badge; pressing it opens the feed (newest first, marked seen when
// opened), where each item can be read, archived or followed (its `data.url`, when it is an
// http(s) link). Everything stays live: the element holds one Server-Sent Events stream
// (`GET /v1/me/inbox/stream`, read with fetch so a bearer token can be sent) and applies each
// change — a new item, a mark made in another tab or on another device — as it arrives,
// resuming after a break with `Last-Event-ID`. When the token expires the element fires
// `notify-inbox-expired`; call `connect({ token })` again with a fresh one.
//
// Without a token (the preference center), the page's session cookie is used: pass the
// page's `api` (an `Api` of api.js, signed in) instead.
//
// Styled through CSS custom properties on the element: --notify-accent, --notify-bg,
// --notify-fg, --notify-muted, --notify-border, --notify-radius, --notify-font,
// --notify-width.

const STYLE = `
:host { position: relative; display: inline-block; font: var(--notify-font, inherit);
  color: var(--notify-fg, #1a1a1a); }
button { font: inherit; cursor: pointer; }
.bell { position: relative; display: inline-flex; align-items: center; gap: .35em;
  padding: .45em .7em; border: 1px solid var(--notify-border, #767676);
  border-radius: var(--notify-radius, 6px); background: var(--notify-bg, #fff);
  color: var(--notify-fg, #1a1a1a); min-height: 44px; }
.bell svg { width: 1.2em; height: 1.2em; }
.badge { min-width: 1.4em; padding: 0 .35em; border-radius: 1em; text-align: center;
  background: var(--notify-accent, #0b57d0); color: #fff; font-size: .85em; font-weight: 600; }
.badge[hidden] { display: none; }
.vh { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
  white-space: nowrap; }
.panel { position: absolute; right: 0; z-index: 10; margin-top: .4em;
  width: min(var(--notify-width, 24rem), calc(100vw - 1.5rem));
  max-height: min(32rem, 80vh); overflow: auto; background: var(--notify-bg, #fff);
  color: var(--notify-fg, #1a1a1a); border: 1px solid var(--notify-border, #767676);
  border-radius: var(--notify-radius, 6px); box-shadow: 0 6px 24px rgba(0,0,0,.18); }
.panel[hidden] { display: none; }
/* A phone: the feed spans the screen under the bell, wherever the bell sits. */
@media (max-width: 600px) {
  .panel { position: fixed; left: .75rem; right: .75rem; width: auto; }
}
.head { display: flex; justify-content: space-between; align-items: center; gap: .5em;
  padding: .6em .8em; border-bottom: 1px solid var(--notify-border, #767676); }
.head h2 { font-size: 1em; margin: 0; }
ul { list-style: none; margin: 0; padding: 0; }
li { padding: .7em .8em; border-bottom: 1px solid #e3e3e3; }
li.unread { border-left: 4px solid var(--notify-accent, #0b57d0); }
.subject { font-weight: 600; margin: 0 0 .2em; }
.text { margin: 0 0 .3em; white-space: pre-wrap; overflow-wrap: anywhere; }
.meta { font-size: .85em; color: var(--notify-muted, #595959); }
.actions { display: flex; flex-wrap: wrap; gap: .4em; margin-top: .4em; }
.actions button, .actions a, .head button { padding: .35em .6em; min-height: 32px;
  border: 1px solid var(--notify-border, #767676); border-radius: var(--notify-radius, 6px);
  background: transparent; color: var(--notify-fg, #1a1a1a); text-decoration: none;
  font-size: .9em; display: inline-flex; align-items: center; }
.actions a { color: var(--notify-accent, #0b57d0); }
.empty, .more { padding: .8em; color: var(--notify-muted, #595959); }
.more button { width: 100%; padding: .45em; border: 1px solid var(--notify-border, #767676);
  border-radius: var(--notify-radius, 6px); background: transparent; color: inherit; }
`;

const BELL = `<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path fill="currentColor" d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2Z"/></svg>`;

function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

// Only http(s) links are followed (a `javascript:` URL in data is text, not an action).
function safeUrl(u) {
  try {
    const url = new URL(String(u), location.href);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

// Reads Server-Sent Events from a fetch response body: calls `on(event, id, data)` per event.
async function readEvents(body, on, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = "message";
      let id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const v = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") event = v;
        else if (field === "id") id = v;
        else if (field === "data") data.push(v);
      }
      if (data.length) on(event, id, data.join("\n"));
    }
  }
}

export class NotifyInbox extends HTMLElement {
  constructor() {
    super();
    this.items = new Map();
    this.order = [];
    this.counts = { unread: 0, unseen: 0 };
    this.lastId = null;
    this.cursor = null;
    this.abort = null;
    this.retry = 500;
    const root = this.attachShadow({ mode: "open" });
    const style = el("style", { textContent: STYLE });
    // The button's name is its text: "Notifications" and, for screen readers, "N unread";
    // the badge shows the number to the eye only.
    this.badge = el("span", { className: "badge", hidden: true });
    this.badge.setAttribute("aria-hidden", "true");
    this.unreadText = el("span", { className: "vh", textContent: "0 unread" });
    this.bell = el("button", { type: "button", className: "bell", part: "bell" });
    this.bell.innerHTML = BELL;
    this.bell.append(el("span", { textContent: "Notifications" }), this.badge, this.unreadText);
    this.bell.setAttribute("aria-expanded", "false");
    this.bell.addEventListener("click", () => this.toggle());
    this.list = el("ul", { className: "items" });
    this.empty = el("p", { className: "empty", textContent: "Nothing here yet." });
    this.moreButton = el("button", { type: "button", textContent: "Show older" });
    this.moreButton.addEventListener("click", () => this.loadPage());
    this.more = el("div", { className: "more", hidden: true }, this.moreButton);
    const readAll = el("button", { type: "button", textContent: "Mark all read" });
    readAll.addEventListener("click", () => this.call("POST", "/v1/me/inbox/read-all").catch((e) => this.fail(e)));
    const title = el("h2", { textContent: "Notifications" });
    title.id = "notify-inbox-title";
    this.panel = el("section", { className: "panel", hidden: true, part: "panel" },
      el("div", { className: "head" }, title, readAll), this.list, this.empty, this.more);
    this.panel.setAttribute("aria-labelledby", title.id);
    this.panel.id = "notify-inbox-panel";
    this.bell.setAttribute("aria-controls", this.panel.id);
    root.append(style, this.bell, this.panel);
    this.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && !this.panel.hidden) {
        this.toggle(false);
        this.bell.focus();
      }
    });
  }

  // Starts (or restarts, with a fresh token) the feed: `{ token }` for a bearer token, or
  // `{ api }` for the pages' signed-in `Api`; `base` is the API's origin (default: this one).
  connect({ token = null, api = null, base = "" } = {}) {
    this.token = token;
    this.api = api;
    this.base = base;
    this.stop();
    this.reload();
  }

  disconnectedCallback() {
    this.stop();
  }

  stop() {
    if (this.abort) this.abort.abort();
    this.abort = null;
    clearTimeout(this.retryTimer);
  }

  async call(method, path) {
    if (this.api) return this.api.call(method, path);
    const resp = await fetch(this.base + path, {
      method,
      headers: { Accept: "application/json", Authorization: `Bearer ${this.token}` },
    });
    const body = await resp.json().catch(() => null);
    if (!resp.ok) {
      const e = new Error((body && body.detail) || `the server answered ${resp.status}`);
      e.status = resp.status;
      throw e;
    }
    return body;
  }

  fail(e) {
    this.dispatchEvent(new CustomEvent("notify-inbox-error", { detail: e }));
  }

  // The first page and the counts afresh, then the live stream from the latest change.
  async reload() {
    this.items.clear();
    this.order = [];
    this.cursor = null;
    this.lastId = null;
    this.render();
    this.listen();
    await this.loadPage();
  }

  async loadPage() {
    const q = this.cursor ? `?cursor=${encodeURIComponent(this.cursor)}` : "";
    try {
      const page = await this.call("GET", `/v1/me/inbox${q}`);
      for (const item of page.items) {
        if (!this.items.has(item.id)) this.order.push(item.id);
        this.items.set(item.id, item);
      }
      this.sortItems();
      this.cursor = page.next_cursor || null;
      this.render();
    } catch (e) {
      this.fail(e);
    }
  }

  sortItems() {
    this.order.sort((a, b) => this.items.get(b).seq - this.items.get(a).seq);
  }

  async listen() {
    const abort = new AbortController();
    this.abort = abort;
    const headers = { Accept: "text/event-stream" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (this.lastId !== null) headers["Last-Event-ID"] = this.lastId;
    let expired = false;
    try {
      const resp = await fetch(`${this.base}/v1/me/inbox/stream`, {
        headers, signal: abort.signal, credentials: "same-origin", cache: "no-store",
      });
      if (resp.status === 401) expired = true;
      else if (resp.ok) {
        this.retry = 500;
        await readEvents(resp.body, (event, id, data) => {
          if (id !== null) this.lastId = id;
          if (event === "expired") expired = true;
          else this.apply(event, JSON.parse(data));
        }, abort.signal);
      }
    } catch {
      // A broken connection: resumed below.
    }
    if (abort.signal.aborted) return;
    if (expired) {
      this.dispatchEvent(new CustomEvent("notify-inbox-expired"));
      return;
    }
    // Resume after a pause that grows while the server stays away.
    this.retryTimer = setTimeout(() => this.listen(), this.retry);
    this.retry = Math.min(this.retry * 2, 15_000);
  }

  apply(event, data) {
    if (event === "counts") {
      this.setCounts(data);
    } else if (event === "reset") {
      this.setCounts(data);
      this.lastId = String(data.last_seq);
      this.items.clear();
      this.order = [];
      this.cursor = null;
      this.loadPage();
    } else if (event === "inbox") {
      const { kind, item, counts } = data;
      if (item) {
        if (!this.items.has(item.id)) this.order.push(item.id);
        this.items.set(item.id, item);
        if (item.archived_at) {
          this.items.delete(item.id);
          this.order = this.order.filter((id) => id !== item.id);
        }
        this.sortItems();
      } else if (kind === "read_all" || kind === "seen_all") {
        const now = data.at;
        for (const i of this.items.values()) {
          if (!i.seen_at) i.seen_at = now;
          if (kind === "read_all" && !i.read_at) i.read_at = now;
        }
      }
      this.setCounts(counts);
      this.render();
      this.dispatchEvent(new CustomEvent("notify-inbox-change", { detail: data }));
    }
  }

  setCounts(c) {
    this.counts = { unread: c.unread, unseen: c.unseen };
    this.badge.textContent = c.unread > 99 ? "99+" : String(c.unread);
    this.badge.hidden = c.unread === 0;
    this.unreadText.textContent = ` ${c.unread} unread`;
  }

  toggle(open = this.panel.hidden) {
    this.panel.hidden = !open;
    this.bell.setAttribute("aria-expanded", String(open));
    if (open && this.counts.unseen > 0) {
      this.call("POST", "/v1/me/inbox/seen-all").catch((e) => this.fail(e));
    }
  }

  async mark(id, verb) {
    try {
      const marked = await this.call("POST", `/v1/me/inbox/${encodeURIComponent(id)}/${verb}`);
      this.apply("inbox", { kind: verb, item: marked.item, counts: marked.counts });
    } catch (e) {
      this.fail(e);
    }
  }

  render() {
    const when = (t) => new Date(t).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    this.list.replaceChildren(...this.order.map((id) => {
      const item = this.items.get(id);
      const li = el("li", { className: item.read_at ? "read" : "unread" });
      li.dataset.id = item.id;
      if (item.subject) li.append(el("p", { className: "subject", textContent: item.subject }));
      li.append(el("p", { className: "text", textContent: item.text }));
      li.append(el("p", { className: "meta",
        textContent: `${when(item.created_at)}${item.read_at ? "" : " · unread"}` }));
      const actions = el("div", { className: "actions" });
      const named = (button, verb) => {
        button.setAttribute("aria-label", `${verb}: ${item.subject || item.text.slice(0, 60)}`);
        return button;
      };
      const url = item.data && safeUrl(item.data.url);
      if (url) {
        const a = named(el("a", { href: url, textContent: "Open", rel: "noopener" }), "Open");
        a.addEventListener("click", () => { this.mark(item.id, "click"); });
        actions.append(a);
      }
      if (!item.read_at) {
        const read = named(el("button", { type: "button", textContent: "Mark read" }), "Mark read");
        read.addEventListener("click", () => this.mark(item.id, "read"));
        actions.append(read);
      }
      const archive = named(el("button", { type: "button", textContent: "Archive" }), "Archive");
      archive.addEventListener("click", () => this.mark(item.id, "archive"));
      actions.append(archive);
      li.append(actions);
      return li;
    }));
    this.empty.hidden = this.order.length > 0;
    this.more.hidden = !this.cursor;
  }
}

if (!customElements.get("notify-inbox")) customElements.define("notify-inbox", NotifyInbox);
