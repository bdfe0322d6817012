// The preference center (`/app`): a user's contacts, channel switches, the kind × channel
// matrix, quiet hours, language, devices, topics and history — each read and saved through the public
// API with the session cookie (decision 0025).
import { Api } from "{{asset:api.js}}";
import "{{asset:inbox.js}}";
import { $, cell, confirmSwitch, el, failure, say } from "{{asset:ui.js}}";

const api = new Api();
const CHANNELS = {
  email: "Email", sms: "SMS", push: "Push", telegram: "Telegram", webhook: "Webhook", in_app: "In-app inbox",
};
const STATUS_WORDS = {
  sent: "sent", delivered: "delivered", queued: "on its way", sending: "on its way",
  retrying: "retrying", pending: "scheduled", dead: "failed", expired: "expired",
  undelivered: "not delivered", suppressed: "not sent", cancelled: "cancelled",
  digested: "in a digest",
  completed: "done", in_progress: "on its way", failed: "failed",
  partially_failed: "partly failed", scheduled: "scheduled",
};
// Why a delivery was not sent, in the user's words.
const REASON_WORDS = {
  opted_out: "not sent (your settings)", no_contact: "not sent (no address)",
  unknown_user: "not sent", invalid_address: "not sent (address invalid)",
  bounced: "not sent (address bounced)", complained: "not sent (you reported spam)",
  device_removed: "not sent (device removed)", throttled: "not sent (too many at once)",
};
// A window as people say it (`10m` → "10 minutes").
const UNITS = { s: "second", m: "minute", h: "hour", d: "day" };
const spanWords = (w) => {
  const n = Number(w.slice(0, -1));
  const unit = UNITS[w.slice(-1)] || w.slice(-1);
  return n === 1 ? `${unit}` : `${n} ${unit}s`;
};
const deliveryWords = (d) =>
  (d.status === "suppressed" && REASON_WORDS[d.reason]) || STATUS_WORDS[d.status] || d.status;
let me = null;
let prefs = null;
let historyCursor = null;
const historyKinds = new Set();

const channelName = (c) => CHANNELS[c] || c;
const when = (t) => new Date(t).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });

// The whole preference document with `change` applied, as PUT /v1/me/preferences takes it.
async function savePrefs(change, done) {
  const body = {
    channels: { ...prefs.channels },
    categories: structuredClone(prefs.categories),
    locale: prefs.locale,
  };
  if (prefs.quiet_hours) body.quiet_hours = { ...prefs.quiet_hours };
  change(body);
  say("Saving…");
  try {
    prefs = await api.put("/v1/me/preferences", body);
    say(done, "ok");
    return true;
  } catch (e) {
    failure("Not saved", e);
    return false;
  }
}

// A checkbox that saves itself; reverted when the save fails.
function switchBox(id, label, checked, save) {
  const input = el("input", { type: "checkbox", checked, id });
  if (label) input.setAttribute("aria-label", label);
  input.addEventListener("change", async () => {
    input.disabled = true;
    if (!(await save(input.checked))) input.checked = !input.checked;
    input.disabled = false;
  });
  return input;
}

function renderContacts() {
  $("email").value = me.contacts.email || "";
  $("phone").value = me.contacts.phone || "";
  $("telegram-line").textContent = me.contacts.telegram_chat_id
    ? "Telegram: linked."
    : "Telegram: not linked.";
}

// Every channel, on unless switched off (the API leaves out switches never touched).
function allChannels() {
  return [...new Set([...Object.keys(CHANNELS), ...Object.keys(prefs.channels)])];
}

function renderChannels() {
  $("channels").replaceChildren(
    ...allChannels().map((channel) => {
      const input = switchBox(`channel-${channel}`, null, prefs.channels[channel] !== false, (on) =>
        savePrefs((b) => { b.channels[channel] = on; }, `Saved: ${channelName(channel)} is ${on ? "on" : "off"}.`));
      return el("li", {}, el("label", {}, input, channelName(channel)));
    }),
  );
}

function renderMatrix() {
  const mandatory = new Set(prefs.mandatory_categories);
  const kinds = [...new Set([...Object.keys(prefs.categories), ...historyKinds, ...mandatory])].sort();
  $("matrix-empty").hidden = kinds.length > 0;
  const channels = allChannels();
  const head = el("tr", {}, el("th", { scope: "col", textContent: "Kind" }),
    ...channels.map((c) => el("th", { scope: "col", textContent: channelName(c) })));
  const rows = kinds.map((kind) => {
    const always = mandatory.has(kind);
    return el("tr", {},
      el("th", { scope: "row", textContent: always ? `${kind} (always sent)` : kind }),
      ...channels.map((channel) => {
        const on = always || (prefs.categories[kind] || {})[channel] !== false;
        const box = switchBox(`cat-${kind}-${channel}`, `${kind} by ${channelName(channel)}`, on, (v) =>
          savePrefs((b) => { (b.categories[kind] ||= {})[channel] = v; },
            `Saved: ${kind} by ${channelName(channel)} is ${v ? "on" : "off"}.`));
        box.disabled = always;
        return el("td", {}, box);
      }));
  });
  $("matrix").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

function zones() {
  try {
    return Intl.supportedValuesOf("timeZone");
  } catch {
    return ["UTC"];
  }
}

function showLocalTime() {
  const zone = $("quiet-zone").value;
  const now = new Date().toLocaleTimeString(undefined, { timeZone: zone, hour: "2-digit", minute: "2-digit" });
  $("quiet-now").textContent = `It is now ${now} in ${zone}.`;
}

function renderQuiet() {
  const q = prefs.quiet_hours;
  const zone = (q && q.timezone) || me.timezone || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const list = zones();
  if (!list.includes(zone)) list.unshift(zone);
  $("quiet-zone").replaceChildren(...list.map((z) => el("option", { value: z, textContent: z, selected: z === zone })));
  $("quiet-on").checked = Boolean(q);
  $("quiet-start").value = (q && q.start) || "22:00";
  $("quiet-end").value = (q && q.end) || "07:00";
  showLocalTime();
}

async function renderDevices() {
  const list = await api.get("/v1/me/devices");
  $("devices-empty").hidden = list.items.length > 0;
  $("devices").replaceChildren(...list.items.map((d) => {
    const name = `${d.platform === "apns" ? "Apple" : "Android"} device added ${when(d.created_at)}`;
    const remove = el("button", { type: "button", textContent: "Remove" });
    remove.setAttribute("aria-label", `Remove ${name}`);
    remove.addEventListener("click", async () => {
      remove.disabled = true;
      try {
        await api.delete(`/v1/me/devices/${d.id}`);
        say("Removed: that device gets no more notifications.", "ok");
        await renderDevices();
      } catch (e) {
        failure("Not removed", e);
        remove.disabled = false;
      }
    });
    return el("li", {}, el("span", { textContent: `${name}, last seen ${when(d.last_seen)}` }), remove);
  }));
}

// The topics the user follows (any can be left) and the open ones they could follow.
async function renderTopics() {
  const { topics } = await api.get("/v1/me/topics");
  $("topics-empty").hidden = topics.length > 0;
  $("topics").replaceChildren(...topics.map((t, i) => {
    const name = t.name || t.key;
    const box = switchBox(`topic-${i}`, null, t.following, async (follow) => {
      say("Saving…");
      try {
        await api.call(follow ? "PUT" : "DELETE", "/v1/me/topics", { keys: [t.key] });
        say(follow ? `Saved: you follow ${name}.` : `Saved: you left ${name}.`, "ok");
        return true;
      } catch (e) {
        failure("Not saved", e);
        return false;
      }
    });
    const label = el("label", { htmlFor: `topic-${i}`,
      textContent: t.following && !t.open ? `${name} (added for you; you can leave it)` : name });
    return el("li", {}, box, label);
  }));
}

// The digest windows and frequency caps that apply to the user: set by the platform's admins,
// shown so a user knows why several messages arrive as one, or one does not arrive at all.
async function renderRules() {
  const rules = await api.get("/v1/me/delivery-rules");
  $("rules-cap").textContent = rules.cap
    ? `At most ${rules.cap.limit} messages per channel every ${spanWords(rules.cap.window)}` +
      (rules.exempt_categories.length ? ` (except ${rules.exempt_categories.join(", ")}).` : ".")
    : "No overall limit on how often we reach you.";
  $("rules").replaceChildren(...rules.categories.map((c) => {
    const parts = [];
    if (c.digest_window) parts.push(`collected into one message every ${spanWords(c.digest_window)}`);
    if (c.cap) parts.push(`at most ${c.cap.limit} per channel every ${spanWords(c.cap.window)}`);
    return el("li", { textContent: `${c.category}: ${parts.join("; ")}` });
  }));
}

async function loadHistory() {
  const q = historyCursor ? `?limit=20&cursor=${encodeURIComponent(historyCursor)}` : "?limit=20";
  const page = await api.get(`/v1/me/notifications${q}`);
  const body = $("history").tBodies[0];
  for (const n of page.items) {
    historyKinds.add(n.category);
    const row = el("tr", {},
      cell("When", when(n.created_at)),
      cell("Kind", n.category),
      cell("Status", STATUS_WORDS[n.status] || n.status),
      cell("Channels", n.deliveries.map((d) => `${channelName(d.channel)}: ${deliveryWords(d)}`).join(", ")));
    row.dataset.id = n.id;
    body.append(row);
  }
  $("history-empty").hidden = body.rows.length > 0;
  historyCursor = page.next_cursor || null;
  $("history-more").hidden = !historyCursor;
}

function wireForms() {
  $("contacts-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {
      email: $("email").value.trim() || null,
      phone: $("phone").value.trim() || null,
      telegram_chat_id: me.contacts.telegram_chat_id || null,
    };
    say("Saving…");
    try {
      me.contacts = await api.put("/v1/me/contacts", body);
      renderContacts();
      say("Saved: your contacts.", "ok");
    } catch (e) {
      failure("Not saved", e);
    }
  });
  $("telegram-link").addEventListener("click", async () => {
    try {
      const link = await api.post("/v1/me/telegram/link", {});
      const code = $("telegram-code");
      code.replaceChildren("Open ", el("a", { href: link.deep_link, textContent: "the bot" }),
        ` or send it /start ${link.code} before ${when(link.expires_at)}.`);
      code.hidden = false;
    } catch (e) {
      failure("Telegram cannot be linked now", e);
    }
  });
  $("quiet-zone").addEventListener("change", showLocalTime);
  $("quiet-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const on = $("quiet-on").checked;
    const q = { start: $("quiet-start").value, end: $("quiet-end").value, timezone: $("quiet-zone").value };
    await savePrefs((b) => { if (on) b.quiet_hours = q; else delete b.quiet_hours; },
      on ? `Saved: quiet from ${q.start} until ${q.end} (${q.timezone}).` : "Saved: no quiet hours.");
  });
  $("locale-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const locale = $("locale").value.trim();
    await savePrefs((b) => { b.locale = locale; }, `Saved: notifications in ${locale}.`);
  });
  $("history-more").addEventListener("click", () => loadHistory().catch((e) => failure("Could not load more", e)));
}

async function main() {
  let session;
  try {
    session = await api.signIn(confirmSwitch);
  } catch (e) {
    say(e.status === 401
      ? "You are signed out. Open the link from your notification settings to sign in."
      : `Could not sign in: ${e.message}`, "bad");
    return;
  }
  const out = $("sign-out");
  out.hidden = false;
  out.addEventListener("click", async () => {
    $("inbox").stop();
    $("inbox").hidden = true;
    await api.signOut();
    $("content").hidden = true;
    out.hidden = true;
    say("You are signed out.");
  });
  if (session.role !== "user") {
    say("This page is for the people who receive notifications.", "bad");
    return;
  }
  try {
    me = await api.get("/v1/me");
    prefs = me.preferences;
    await loadHistory();
    renderContacts();
    renderChannels();
    renderMatrix();
    renderQuiet();
    $("locale").value = prefs.locale;
    await renderDevices();
    await renderTopics();
    await renderRules();
    wireForms();
    // The in-app feed through the same module product pages embed, on this page's session.
    const inbox = $("inbox");
    inbox.addEventListener("notify-inbox-expired", () =>
      say("Your session ended. Open the link from your notification settings again.", "bad"));
    inbox.connect({ api });
    inbox.hidden = false;
    $("content").hidden = false;
    say("");
  } catch (e) {
    failure("Could not load your settings", e);
  }
}

// A second sign-in link opened on this page (only the fragment changes): start over with it.
window.addEventListener("hashchange", () => {
  if (new URLSearchParams(location.hash.slice(1)).has("token")) location.reload();
});

main();
