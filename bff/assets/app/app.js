// The preference center (`/app`): a user's contacts and channel switches, saved through the
// public API with the session cookie.
import { Api } from "{{asset:api.js}}";

const api = new Api();
const $ = (id) => document.getElementById(id);
const CHANNELS = { email: "Email", sms: "SMS", push: "Push", telegram: "Telegram", webhook: "Webhook" };
let prefs = null;

function say(text, kind = "") {
  const s = $("status");
  s.textContent = text;
  s.className = kind;
}

function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

function renderContacts(contacts) {
  const rows = [
    ["Email", contacts.email],
    ["Phone", contacts.phone],
    ["Telegram", contacts.telegram_chat_id ? "linked" : null],
  ];
  $("contacts").replaceChildren(
    ...rows.flatMap(([name, value]) => [
      el("dt", { textContent: name }),
      el("dd", { textContent: value || "not set", className: value ? "" : "muted" }),
    ]),
  );
}

// Every channel, on unless switched off (the API leaves out switches never touched).
function renderChannels() {
  const channels = [...new Set([...Object.keys(CHANNELS), ...Object.keys(prefs.channels)])];
  $("channels").replaceChildren(
    ...channels.map((channel) => {
      const on = prefs.channels[channel] !== false;
      const input = el("input", { type: "checkbox", checked: on, id: `channel-${channel}` });
      input.addEventListener("change", () => saveChannel(channel, input));
      return el("li", {}, el("label", {}, input, CHANNELS[channel] || channel));
    }),
  );
}

async function saveChannel(channel, input) {
  const body = {
    channels: { ...prefs.channels, [channel]: input.checked },
    categories: prefs.categories,
    locale: prefs.locale,
  };
  if (prefs.quiet_hours) body.quiet_hours = prefs.quiet_hours;
  input.disabled = true;
  say("Saving…");
  try {
    prefs = await api.put("/v1/me/preferences", body);
    say(`Saved: ${CHANNELS[channel] || channel} is ${input.checked ? "on" : "off"}.`, "ok");
  } catch (e) {
    input.checked = !input.checked;
    say(`Not saved: ${e.message}`, "bad");
  } finally {
    input.disabled = false;
  }
}

async function main() {
  let session;
  try {
    session = await api.signIn();
  } catch (e) {
    say(e.status === 401
      ? "You are signed out. Open the link from your notification settings to sign in."
      : `Could not sign in: ${e.message}`, "bad");
    return;
  }
  const out = $("sign-out");
  out.hidden = false;
  out.addEventListener("click", async () => {
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
    const me = await api.get("/v1/me");
    prefs = me.preferences;
    renderContacts(me.contacts);
    renderChannels();
    $("content").hidden = false;
    say("");
  } catch (e) {
    say(`Could not load your settings: ${e.message}`, "bad");
  }
}

// A second sign-in link opened on this page (only the fragment changes): start over with it.
window.addEventListener("hashchange", () => {
  if (new URLSearchParams(location.hash.slice(1)).has("token")) location.reload();
});

main();
