// The preference center (/app) in a real browser against `notifyctl up`: signed in from a
// link, a preference changed and honoured by the next notification (which the user then sees
// in their history), quiet hours in a chosen time zone, a topic followed and left, contacts refused with the field named,
// accessible and self-contained at phone and desktop widths.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import {
  api, foreignRequests, launch, mint, open, profileCached, screenshot, sendSettled,
  seriousViolations, stack, until,
} from "./browser.mjs";

const token = stack.tokens.user;
const user = stack.user_id;
let browser;

before(async () => {
  browser = await launch();
  // The demo user's welcome email (sent at start) has settled: nothing caches their profile
  // behind the test's back from here on.
  await until("the welcome notification to settle", async () => {
    const h = await api("GET", "/v1/me/notifications", token);
    return h.body.items.length > 0 && h.body.items.every((n) => !["in_progress", "scheduled"].includes(n.status));
  });
});
after(async () => { await browser?.close(); });

async function signedIn(width = 1440) {
  const page = await open(browser, width);
  await page.goto(`${stack.url}/app#token=${token}`);
  try {
    await page.getByRole("heading", { name: "Channels" }).waitFor();
  } catch (e) {
    throw new Error(`/app did not load: "${await page.locator("#status").innerText()}" ${page.consoleErrors}`);
  }
  return page;
}

test("a user turns email off and the next notification honours it, as their history shows", async () => {
  const reset = await api("PUT", "/v1/me/preferences", token, { channels: {}, categories: {} });
  assert.equal(reset.status, 200, JSON.stringify(reset.body));
  const page = await signedIn();
  assert.equal(new URL(page.url()).hash, "", "the token leaves the address bar at once");
  const email = page.getByLabel("Email", { exact: true }).and(page.locator("#channel-email"));
  assert.ok(await email.isChecked());

  await email.uncheck();
  await page.getByText("Saved: Email is off.").waitFor();
  assert.equal((await api("GET", "/v1/me/preferences", token)).body.channels.email, false);
  await until("the cached profile to be evicted", () => !profileCached(user));

  const n = await sendSettled({
    recipients: [{ user_id: user }], category: "news",
    content: { subject: "Weekly news", text: "Read all about it" },
  });
  const delivery = n.deliveries.find((d) => d.channel === "email");
  assert.equal(delivery.status, "suppressed", JSON.stringify(n));

  // A reload keeps the session (the cookie), shows the switch off and the notification in
  // the history with what happened to it.
  await page.reload();
  await page.getByRole("heading", { name: "Channels" }).waitFor();
  assert.equal(await page.locator("#channel-email").isChecked(), false);
  const row = page.locator(`#history tr[data-id="${n.id}"]`);
  await row.waitFor();
  const text = await row.innerText();
  assert.match(text, /news/);
  assert.match(text, /Email: not sent \(your settings\)/);
  // "news" is now a row of the kind × channel matrix.
  assert.ok(await page.getByLabel("news by SMS").isChecked());

  assert.deepEqual(await seriousViolations(page), []);
  assert.deepEqual(foreignRequests(page), []);
  assert.deepEqual(page.consoleErrors, []);
  await page.context().close();
});

test("quiet hours are saved in the chosen time zone, with the local time shown", async () => {
  const page = await signedIn();
  await page.getByLabel("Time zone").selectOption("America/Los_Angeles");
  const now = await page.locator("#quiet-now").innerText();
  const expected = new Date().toLocaleTimeString("en-US", {
    timeZone: "America/Los_Angeles", hour: "2-digit", minute: "2-digit",
  });
  assert.match(now, /in America\/Los_Angeles/);
  // The page formats in the browser's locale: compare the hour and minute digits only.
  assert.ok(now.replace(/\D/g, "").includes(expected.replace(/\D/g, "").slice(0, 3)), `${now} vs ${expected}`);
  await page.getByLabel("Hold notifications during quiet hours").check();
  await page.getByLabel("From").fill("21:30");
  await page.getByLabel("Until").fill("06:45");
  await page.getByRole("button", { name: "Save quiet hours" }).click();
  await page.getByText("Saved: quiet from 21:30 until 06:45 (America/Los_Angeles).").waitFor();
  const prefs = await api("GET", "/v1/me/preferences", token);
  assert.deepEqual(prefs.body.quiet_hours, { start: "21:30", end: "06:45", timezone: "America/Los_Angeles" });
  await page.context().close();
});

test("a bad phone number is refused with the field named and nothing changes", async () => {
  const before = (await api("GET", "/v1/me", token)).body.contacts;
  const page = await signedIn(375);
  await page.getByLabel(/^Phone/).fill("030 1234567");
  await page.getByRole("button", { name: "Save contacts" }).click();
  await page.getByText(/Not saved: phone/).waitFor();
  assert.deepEqual((await api("GET", "/v1/me", token)).body.contacts, before);
  await page.context().close();
});

test("a user removes a device and it is gone from the API", async () => {
  const added = await api("POST", "/v1/me/devices", token, { platform: "fcm", token: "browser-test-device" });
  assert.ok([200, 201].includes(added.status), JSON.stringify(added.body));
  const page = await signedIn();
  const remove = page.getByRole("button", { name: /^Remove Android device added/ });
  await remove.click();
  await page.getByText("Removed: that device gets no more notifications.").waitFor();
  await page.getByText("No device receives push notifications.").waitFor();
  const left = await api("GET", "/v1/me/devices", token);
  assert.deepEqual(left.body.items, []);
  await page.context().close();
});

test("a user follows an open topic and leaves it again, as the API shows", async () => {
  const made = await api("PUT", "/v1/topics/browser.news", stack.tokens.admin, { name: "Browser news", open: true });
  assert.ok([200, 201].includes(made.status), JSON.stringify(made.body));
  const page = await signedIn();
  const box = page.getByLabel("Browser news");
  await box.check();
  await page.getByText("Saved: you follow Browser news.").waitFor();
  const following = (await api("GET", "/v1/me/topics", token)).body.topics;
  assert.ok(following.some((t) => t.key === "browser.news" && t.following), JSON.stringify(following));
  await box.uncheck();
  await page.getByText("Saved: you left Browser news.").waitFor();
  const left = (await api("GET", "/v1/me/topics", token)).body.topics;
  assert.ok(left.some((t) => t.key === "browser.news" && !t.following), JSON.stringify(left));
  await page.context().close();
});

test("the digest windows and caps admins set show in the user's preference center", async () => {
  const set = await api("PUT", "/v1/admin/categories/browser.digest", stack.tokens.admin,
    { digest_window: "10m", cap: { limit: 3, window: "1d" } });
  assert.equal(set.status, 200, JSON.stringify(set.body));
  const page = await signedIn();
  await page.getByRole("heading", { name: "How often we reach you" }).waitFor();
  await page.getByText("browser.digest: collected into one message every 10 minutes; at most 3 per channel every day").waitFor();
  assert.equal((await api("DELETE", "/v1/admin/categories/browser.digest", stack.tokens.admin)).status, 204);
  await page.context().close();
});

for (const [width, name] of [[1440, "desktop"], [375, "phone"]]) {
  test(`/app at ${width} px is accessible and fits (${name})`, async () => {
    const page = await signedIn(width);
    await page.locator("#history tbody tr").first().waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than the screen`);
    assert.deepEqual(await seriousViolations(page), []);
    await screenshot(page, `app-${name}`);
    await page.context().close();
  });
}

test("another user's link shows only that user's own settings and history", async () => {
  const other = await api("POST", "/v1/users", stack.tokens.service, { email: "other@example.com" });
  assert.equal(other.status, 201, JSON.stringify(other.body));
  const page = await open(browser);
  await page.goto(`${stack.url}/app#token=${mint(other.body.user_id, "user")}`);
  await page.getByRole("heading", { name: "Channels" }).waitFor();
  assert.equal(await page.getByLabel("Email", { exact: true }).first().inputValue(), "other@example.com");
  const history = await page.locator("#history tbody").innerText();
  assert.doesNotMatch(history, /news/, "the first user's notifications are not here");
  await page.context().close();
});

test("without a session /app says how to sign in, and an admin's token is not a user's", async () => {
  const page = await open(browser);
  await page.goto(`${stack.url}/app`);
  await page.getByText("You are signed out.", { exact: false }).waitFor();
  await page.goto(`${stack.url}/app#token=${stack.tokens.admin}`);
  await page.getByText("This page is for the people who receive notifications.").waitFor();
  assert.equal(await page.locator("#content").isHidden(), true);
  await page.context().close();
});

test("a link for someone else asks before it replaces the session, and staying keeps it", async () => {
  const mine = await api("GET", "/v1/me", token);
  const other = await api("POST", "/v1/users", stack.tokens.service, { email: "someone-else@example.com" });
  assert.equal(other.status, 201, JSON.stringify(other.body));
  const theirs = mint(other.body.user_id, "user");
  const page = await signedIn();
  const email = () => page.getByLabel("Email", { exact: true }).first().inputValue();
  assert.equal(await email(), mine.body.contacts.email);

  // The link reloads the page, which asks instead of switching silently.
  await page.goto(`${stack.url}/app#token=${theirs}`);
  const dialog = page.getByRole("dialog");
  await dialog.waitFor();
  const text = await dialog.innerText();
  assert.match(text, new RegExp(user), "it names who is signed in");
  assert.match(text, new RegExp(other.body.user_id), "and who the link is for");
  assert.deepEqual(await seriousViolations(page), []);
  await page.getByRole("button", { name: /^Stay as/ }).click();
  await page.getByRole("heading", { name: "Channels" }).waitFor();
  assert.equal(await email(), mine.body.contacts.email, "still signed in as before");
  assert.equal(new URL(page.url()).hash, "", "the other token left the address bar");

  // Asked again, the person switches.
  await page.goto(`${stack.url}/app#token=${theirs}`);
  await page.getByRole("button", { name: "Switch" }).click();
  await until("the page to show the other account", async () => (await email()) === "someone-else@example.com");
  await page.context().close();
});
