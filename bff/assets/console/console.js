// The admin console (`/console`): find notifications by every admin filter, follow one
// delivery's attempts, re-drive dead letters after saying how many will move, stats, and
// templates with a live preview per locale —
// all through the public admin API with the session cookie (decision 0025).
import { Api } from "{{asset:api.js}}";
import { $, cell, confirmSwitch, el, failure, say } from "{{asset:ui.js}}";

const api = new Api();
const VIEWS = ["notifications", "notification", "dead-letters", "stats", "templates"];
const STATUS_COLORS = {
  sent: "#1a7f37", delivered: "#116329", queued: "#0b5fcc", sending: "#0b5fcc", pending: "#6e7781",
  retrying: "#9a6700", dead: "#b42318", expired: "#8c2f39", undelivered: "#cf222e",
  suppressed: "#57606a", cancelled: "#8c959f", digested: "#8250df",
};
let searchCursor = null;
let deadIds = [];

const when = (t) => new Date(t).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
const errorText = (e) => (e ? `${e.code}: ${e.message}` : "");

// A form's filled fields as a query string; datetime-local values as RFC 3339.
function query(form, extra = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData(form)) {
    if (!v) continue;
    q.set(k, form.elements[k].type === "datetime-local" ? new Date(v).toISOString() : v);
  }
  for (const [k, v] of Object.entries(extra)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

function show(view) {
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
}

// --- Notifications: search and one notification ---

// Answers can arrive out of order (the first page still loading when a filtered search is
// asked for): only the newest search's answer is shown.
let searchSeq = 0;

async function search(more = false) {
  if (!more) searchCursor = null;
  const seq = ++searchSeq;
  const page = await api.get(`/v1/admin/notifications${query($("search-form"), { limit: "50", cursor: searchCursor })}`);
  if (seq !== searchSeq) return;
  const body = $("results").tBodies[0];
  if (!more) body.replaceChildren();
  for (const n of page.items) {
    const summary = countsText(n.delivery_counts);
    body.append(el("tr", {},
      cell("Created", el("a", { href: `#/notifications/${n.id}`, textContent: when(n.created_at) })),
      cell("Kind", n.category),
      cell("Status", n.status),
      cell("Deliveries", summary)));
  }
  searchCursor = page.next_cursor || null;
  $("results-more").hidden = !searchCursor;
  say(body.rows.length ? "" : "No notification matches.");
}

function attemptLine(a) {
  const outcome = a.outcome.replaceAll("_", " ");
  const error = a.error ? ` — ${errorText(a.error)}` : "";
  return `Attempt ${a.attempt} at ${when(a.at)}: ${outcome} via ${a.provider} in ${a.duration_ms} ms${error}`;
}

// "email: 2 sent, 1 dead; sms: 1 suppressed"
function countsText(counts) {
  return Object.entries(counts.by_channel)
    .map(([channel, statuses]) => `${channel}: ${Object.entries(statuses).map(([s, k]) => `${k} ${s}`).join(", ")}`)
    .join("; ");
}

let deliveriesCursor = null;
let deliveriesOf = null;

async function showNotification(id) {
  show("notification");
  const n = await api.get(`/v1/notifications/${id}`);
  deliveriesOf = n;
  $("notification-title").textContent = `Notification ${n.id}`;
  const facts = [["Status", n.status], ["Kind", n.category], ["Priority", n.priority],
    ["Created", when(n.created_at)]];
  if (n.send_at) facts.push(["Send at", when(n.send_at)]);
  if (n.fanout) {
    const f = n.fanout;
    facts.push(["Topic", f.topic]);
    facts.push(["Fan-out", `${f.state}: ${f.planned} of ${f.total ?? "?"} subscribers planned ` +
      `(${f.chunks_done} of ${f.chunks ?? "?"} chunks)`]);
  }
  if (n.digest) {
    const g = n.digest;
    facts.push(["Digest", `${g.items} notifications with key ${g.key} on ${g.channel}, ` +
      `collected ${when(g.opened_at)} – ${when(g.closes_at)}`]);
  }
  facts.push(["Deliveries", `${n.delivery_counts.total} (${countsText(n.delivery_counts)})`]);
  $("notification-facts").replaceChildren(
    ...facts.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: v })]));
  // A digest's own notification lists the notifications it folded, each a link.
  $("notification-digest").hidden = !n.digest;
  $("digest-items").replaceChildren();
  if (n.digest) {
    const g = await api.get(`/v1/admin/digests/${n.digest.id}`);
    $("digest-items").replaceChildren(...g.folded.map((i) => el("li", {},
      el("a", { href: `#/notifications/${i.notification_id}`, textContent: i.summary }),
      ` (${when(i.created_at)})`)));
    if (g.items > g.folded.length) {
      $("digest-items").append(el("li", { textContent: `… and ${g.items - g.folded.length} more` }));
    }
  }
  $("deliveries").replaceChildren();
  await appendDeliveries(n.deliveries, n.deliveries_next_cursor);
  say("");
}

// The next page of the notification's deliveries (the view carries the first 100).
async function moreDeliveries() {
  const n = deliveriesOf;
  const page = await api.get(`/v1/notifications/${n.id}/deliveries?cursor=${encodeURIComponent(deliveriesCursor)}&limit=100`);
  await appendDeliveries(page.items, page.next_cursor);
}

async function appendDeliveries(deliveries, cursor) {
  const details = await Promise.all(deliveries.map((d) => api.get(`/v1/admin/deliveries/${d.id}`)));
  $("deliveries").append(...details.map((detail) => {
    const d = detail; // the delivery's fields, flattened, with attempt_log and redrives
    const events = [
      ...detail.attempt_log.map((a) => ({ at: a.at, text: attemptLine(a) })),
      ...detail.redrives.map((r) => ({
        at: r.at,
        text: `Re-driven at ${when(r.at)} by ${r.actor} (${r.kind.replaceAll("_", " ")}): attempt ${r.from_attempt} → ${r.to_attempt}${r.detail ? ` — ${r.detail}` : ""}`,
      })),
      // What the user did with an in-app item.
      ...Object.entries(detail.inbox || {})
        .filter(([, at]) => at)
        .map(([mark, at]) => ({ at, text: `${mark.replace("_at", "").replace(/^./, (c) => c.toUpperCase())} by the user at ${when(at)}` })),
    ].sort((a, b) => new Date(a.at) - new Date(b.at));
    const title = `${d.channel} to ${d.address || "(no address)"}: ${d.status}${d.reason ? ` (${d.reason})` : ""}`;
    const headingId = `delivery-${d.id}`;
    const section = el("section", { className: "delivery" },
      el("h3", { id: headingId, textContent: title }),
      el("p", { className: "muted", textContent: `Delivery ${d.id}` }));
    section.setAttribute("aria-labelledby", headingId);
    if (d.digest) {
      const g = d.digest;
      section.append(g.notification_id
        ? el("p", {}, "Folded into a digest, sent as ",
          el("a", { href: `#/notifications/${g.notification_id}`, textContent: `notification ${g.notification_id}` }), ".")
        : el("p", { textContent: `Folded into digest ${g.id} (${g.state}), closing ${when(g.closes_at)}.` }));
    }
    if (d.fallback_of) {
      section.append(el("p", {}, "Fallback of ",
        el("a", { href: `#/notifications/${d.notification_id}`, textContent: `delivery ${d.fallback_of}` }), "."));
    }
    section.append(events.length
      ? el("ol", { className: "timeline" }, ...events.map((e) => el("li", { textContent: e.text })))
      : el("p", { className: "muted", textContent: "No attempt yet." }));
    return section;
  }));
  deliveriesCursor = cursor || null;
  $("deliveries-more").hidden = !deliveriesCursor;
  const shown = $("deliveries").children.length;
  $("deliveries-shown").textContent = `Showing ${shown} of ${deliveriesOf.delivery_counts.total} deliveries.`;
}

// --- Dead letters: filter, count, confirm, re-drive exactly those ---

async function loadDead() {
  const form = $("dead-form");
  const items = [];
  let cursor = null;
  do {
    const page = await api.get(`/v1/admin/dead-letters${query(form, { limit: "200", cursor })}`);
    items.push(...page.items);
    cursor = page.next_cursor || null;
  } while (cursor && items.length < 5000);
  deadIds = items.map((d) => d.id);
  $("dead").tBodies[0].replaceChildren(...items.map((d) => el("tr", {},
    cell("Delivery", el("a", { href: `#/notifications/${d.notification_id}`, textContent: d.id })),
    cell("Channel", d.channel),
    cell("Address", d.address || ""),
    cell("Error", errorText(d.last_error)),
    cell("Died", when(d.updated_at)))));
  $("dead-count").textContent = items.length === 1 ? "1 dead letter matches." : `${items.length} dead letters match.`;
  const button = $("redrive");
  button.hidden = items.length === 0;
  button.textContent = `Re-drive ${items.length}`;
}

async function redrive() {
  const ids = deadIds.slice();
  $("confirm-text").textContent =
    `Re-drive ${ids.length} dead letter${ids.length === 1 ? "" : "s"}? Each gets a new attempt and the whole retry schedule.`;
  const dialog = $("confirm");
  dialog.returnValue = "";
  dialog.showModal();
  await new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
  if (dialog.returnValue !== "go") {
    say("Nothing re-driven.");
    return;
  }
  let redriven = 0;
  let skipped = 0;
  for (let i = 0; i < ids.length; i += 1000) {
    const answer = await api.post("/v1/admin/dead-letters/redrive", { ids: ids.slice(i, i + 1000) });
    redriven += answer.redriven;
    skipped += (answer.skipped || []).length;
  }
  await loadDead();
  say(`Re-drove ${redriven}${skipped ? `; ${skipped} were no longer dead` : ""}.`, "ok");
}

// --- Stats: deliveries per channel × status as stacked bars, latency percentiles ---

function chart(counts) {
  const ns = "http://www.w3.org/2000/svg";
  const channels = Object.keys(counts);
  const max = Math.max(1, ...channels.map((c) => Object.values(counts[c]).reduce((a, b) => a + b, 0)));
  const rowH = 28;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 600 ${channels.length * rowH + 10}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", channels.map((c) =>
    `${c}: ${Object.entries(counts[c]).map(([s, n]) => `${n} ${s}`).join(", ")}`).join("; ") || "no deliveries");
  channels.forEach((c, i) => {
    const label = document.createElementNS(ns, "text");
    Object.entries({ x: 0, y: i * rowH + 19, "font-size": 13, fill: "#1b1f24" }).forEach(([k, v]) => label.setAttribute(k, v));
    label.textContent = c;
    svg.append(label);
    let x = 90;
    for (const [status, n] of Object.entries(counts[c])) {
      const w = (n / max) * 500;
      const rect = document.createElementNS(ns, "rect");
      Object.entries({ x, y: i * rowH + 4, width: Math.max(w, n ? 1 : 0), height: 20, fill: STATUS_COLORS[status] || "#57606a" })
        .forEach(([k, v]) => rect.setAttribute(k, v));
      const tip = document.createElementNS(ns, "title");
      tip.textContent = `${c} ${status}: ${n}`;
      rect.append(tip);
      svg.append(rect);
      x += w;
    }
  });
  return svg;
}

const BUCKETS = { "15m": "1m", "1h": "5m", "24h": "1h", "7d": "12h" };
let lastStats = null;

// One stacked column per bucket: the statuses of the chosen channel (or all of them).
function seriesChart(series, channel) {
  const ns = "http://www.w3.org/2000/svg";
  const buckets = series.map((b) => {
    const by = {};
    for (const [c, m] of Object.entries(b.counts)) {
      if (channel && c !== channel) continue;
      for (const [s, n] of Object.entries(m)) by[s] = (by[s] || 0) + n;
    }
    return { at: b.at, by, total: Object.values(by).reduce((a, n) => a + n, 0) };
  }).filter((b) => b.total > 0);
  const svg = document.createElementNS(ns, "svg");
  const width = 600;
  const height = 160;
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 20}`);
  svg.setAttribute("role", "img");
  const time = (t) => new Date(t).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  svg.setAttribute("aria-label", buckets.length
    ? `Deliveries of ${channel || "every channel"} per bucket: ` +
      buckets.map((b) => `${time(b.at)}: ${Object.entries(b.by).map(([s, n]) => `${n} ${s}`).join(", ")}`).join("; ")
    : "No deliveries in this window.");
  const max = Math.max(1, ...buckets.map((b) => b.total));
  const w = buckets.length ? Math.min(40, width / buckets.length) : 0;
  buckets.forEach((b, i) => {
    let y = height;
    for (const [status, n] of Object.entries(b.by)) {
      const h = (n / max) * (height - 10);
      y -= h;
      const rect = document.createElementNS(ns, "rect");
      Object.entries({ x: i * w + 1, y, width: Math.max(w - 2, 1), height: h, fill: STATUS_COLORS[status] || "#57606a" })
        .forEach(([k, v]) => rect.setAttribute(k, v));
      const tip = document.createElementNS(ns, "title");
      tip.textContent = `${time(b.at)} ${status}: ${n}`;
      rect.append(tip);
      svg.append(rect);
    }
  });
  if (buckets.length) {
    const ends = buckets.length > 1 ? [[0, "start"], [buckets.length - 1, "end"]] : [[0, "start"]];
    for (const [i, anchor] of ends) {
      const label = document.createElementNS(ns, "text");
      Object.entries({ x: anchor === "start" ? 0 : buckets.length * w, y: height + 16, "font-size": 12,
        "text-anchor": anchor, fill: "#57606a" }).forEach(([k, v]) => label.setAttribute(k, v));
      label.textContent = time(buckets[i].at);
      svg.append(label);
    }
  }
  return svg;
}

function drawSeries() {
  if (!lastStats) return;
  const channel = new FormData($("series-form")).get("channel");
  $("stats-series").replaceChildren(seriesChart(lastStats.series || [], channel));
}

// The three percentiles as bars on one scale (the text above says the same).
function latencyChart(l) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 600 84");
  svg.setAttribute("aria-hidden", "true");
  svg.classList.add("latency");
  const rows = [["p50", l.p50], ["p95", l.p95], ["p99", l.p99]];
  const max = Math.max(1, ...rows.map(([, v]) => v || 0));
  rows.forEach(([name, v], i) => {
    const label = document.createElementNS(ns, "text");
    Object.entries({ x: 0, y: i * 28 + 18, "font-size": 13, fill: "#1b1f24" }).forEach(([k, a]) => label.setAttribute(k, a));
    label.textContent = name;
    const rect = document.createElementNS(ns, "rect");
    Object.entries({ x: 50, y: i * 28 + 4, width: ((v || 0) / max) * 450, height: 20, fill: "#0b5fcc" })
      .forEach(([k, a]) => rect.setAttribute(k, a));
    const value = document.createElementNS(ns, "text");
    Object.entries({ x: 56 + ((v || 0) / max) * 450, y: i * 28 + 18, "font-size": 12, fill: "#57606a" })
      .forEach(([k, a]) => value.setAttribute(k, a));
    value.textContent = v == null ? "–" : `${Math.round(v)} ms`;
    svg.append(label, rect, value);
  });
  return svg;
}

async function loadStats() {
  const window = new FormData($("stats-form")).get("window");
  const stats = await api.get(`/v1/admin/stats?window=${encodeURIComponent(window)}&bucket=${BUCKETS[window] || "5m"}`);
  lastStats = stats;
  drawSeries();
  const statuses = [...new Set(Object.values(stats.counts).flatMap((m) => Object.keys(m)))].sort();
  const table = el("table", { className: "cards" },
    el("caption", { textContent: `Deliveries created in the last ${window}, by channel and status` }),
    el("thead", {}, el("tr", {}, el("th", { scope: "col", textContent: "Channel" }),
      ...statuses.map((s) => el("th", { scope: "col", textContent: s })))),
    el("tbody", {}, ...Object.entries(stats.counts).map(([c, m]) => el("tr", {},
      el("th", { scope: "row", textContent: c }),
      ...statuses.map((s) => cell(s, String(m[s] || 0)))))));
  const legend = el("ul", { className: "legend" }, ...statuses.map((s) => {
    const swatch = el("span", { className: "swatch" });
    swatch.style.background = STATUS_COLORS[s] || "#57606a";
    return el("li", {}, swatch, s);
  }));
  $("stats-chart").replaceChildren(chart(stats.counts), legend, table);
  const ms = (v) => (v == null ? "–" : `${Math.round(v)} ms`);
  const l = stats.latency_ms;
  $("stats-latency").replaceChildren(
    `Accept → sent: p50 ${ms(l.p50)}, p95 ${ms(l.p95)}, p99 ${ms(l.p99)}.`, latencyChart(l));
  say("");
}

// --- Templates: edit per locale with a live preview, save all locales ---

let template = null; // { name, locales: { [locale]: variant } }
let previewTimer = null;

function currentVariant() {
  const v = { text: $("t-text").value };
  if ($("t-subject").value) v.subject = $("t-subject").value;
  if ($("t-html").value) v.html = $("t-html").value;
  return v;
}

function showLocale(locale) {
  const v = template.locales[locale] || { text: "" };
  $("t-subject").value = v.subject || "";
  $("t-text").value = v.text || "";
  $("t-html").value = v.html || "";
  $("t-locale").replaceChildren(...Object.keys(template.locales).map((l) =>
    el("option", { value: l, textContent: l, selected: l === locale })));
  schedulePreview();
}

function schedulePreview() {
  clearTimeout(previewTimer);
  previewTimer = setTimeout(() => preview().catch((e) => failure("Could not preview", e)), 250);
}

async function preview() {
  const locale = $("t-locale").value;
  template.locales[locale] = currentVariant();
  const error = $("preview-error");
  let data;
  try {
    data = JSON.parse($("t-data").value || "{}");
  } catch {
    error.textContent = "The data is not JSON.";
    error.hidden = false;
    return;
  }
  try {
    const out = await api.post("/v1/admin/template-preview", { variant: template.locales[locale], data });
    error.hidden = true;
    const rows = [["Locale", locale], ["Subject", out.subject ?? "(none)"], ["Text", out.text]];
    if (out.html != null) rows.push(["HTML", out.html]);
    $("preview").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { textContent: k }),
      el("dd", {}, el("pre", { textContent: v }))]));
  } catch (e) {
    if (e.status !== 422) throw e;
    const fields = (e.problem.errors || []).map((f) => `${f.field}: ${f.message}`).join("; ");
    error.textContent = `This template does not render (${locale}): ${fields || e.message}`;
    error.hidden = false;
  }
}

async function openTemplate(name) {
  try {
    template = await api.get(`/v1/admin/templates/${encodeURIComponent(name)}`);
    say(`Opened ${name}.`);
  } catch (e) {
    if (e.status !== 404) throw e;
    template = { name, locales: { en: { text: "" } } };
    say(`${name} is new: write its first locale.`);
  }
  $("editor-title").textContent = `Edit ${name}`;
  $("template-editor").hidden = false;
  showLocale(Object.keys(template.locales)[0]);
}

async function saveTemplate() {
  const locale = $("t-locale").value;
  template.locales[locale] = currentVariant();
  try {
    template = await api.put(`/v1/admin/templates/${encodeURIComponent(template.name)}`, { locales: template.locales });
    say(`Saved ${template.name} (${Object.keys(template.locales).join(", ")}).`, "ok");
  } catch (e) {
    failure("Not saved", e);
  }
}

function wireTemplates() {
  $("template-open").addEventListener("submit", (ev) => {
    ev.preventDefault();
    openTemplate(new FormData(ev.target).get("name")).catch((e) => failure("Could not open", e));
  });
  $("t-locale").addEventListener("change", () => showLocale($("t-locale").value));
  $("t-add-locale").addEventListener("click", () => {
    const l = $("t-new-locale").value.trim();
    if (!l) return;
    template.locales[$("t-locale").value] = currentVariant();
    template.locales[l] ||= { ...currentVariant() };
    $("t-new-locale").value = "";
    showLocale(l);
  });
  for (const id of ["t-subject", "t-text", "t-html", "t-data"]) $(id).addEventListener("input", schedulePreview);
  $("template-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    saveTemplate();
  });
}

// --- Routing by the fragment: #/notifications[/id], #/dead-letters, #/stats ---

async function route() {
  const [, view = "notifications", id] = location.hash.split("/");
  try {
    if (view === "notifications" && id) await showNotification(id);
    else if (view === "dead-letters") { show("dead-letters"); await loadDead(); say(""); }
    else if (view === "stats") { show("stats"); await loadStats(); }
    else if (view === "templates") { show("templates"); say(""); }
    else { show("notifications"); await search(); }
  } catch (e) {
    failure("Could not load", e);
  }
}

function wire() {
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    search().catch((e) => failure("Could not search", e));
  });
  $("results-more").addEventListener("click", () => search(true).catch((e) => failure("Could not load more", e)));
  $("deliveries-more").addEventListener("click", () => moreDeliveries().catch((e) => failure("Could not load more", e)));
  $("dead-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadDead().then(() => say("")).catch((e) => failure("Could not filter", e));
  });
  $("redrive").addEventListener("click", () => redrive().catch((e) => failure("Not re-driven", e)));
  wireTemplates();
  $("stats-form").addEventListener("change", () => loadStats().catch((e) => failure("Could not load stats", e)));
  $("series-form").addEventListener("change", drawSeries);
  window.addEventListener("hashchange", () => {
    if (new URLSearchParams(location.hash.slice(1)).has("token")) location.reload();
    else route();
  });
}

async function main() {
  let session;
  try {
    session = await api.signIn(confirmSwitch);
  } catch (e) {
    say(e.status === 401 ? "You are signed out. Sign in with an admin's link." : `Could not sign in: ${e.message}`, "bad");
    return;
  }
  const out = $("sign-out");
  out.hidden = false;
  out.addEventListener("click", async () => {
    await api.signOut();
    for (const v of VIEWS) $(`view-${v}`).hidden = true;
    $("nav").hidden = true;
    out.hidden = true;
    say("You are signed out.");
  });
  if (session.role !== "admin") {
    say("This console is for admins.", "bad");
    return;
  }
  $("nav").hidden = false;
  wire();
  await route();
}

main();
