// The in-app feed (`<notify-inbox>`, decision 0029) in a real browser against `notifyctl up`:
// embedded in the preference center (session cookie) and in the demo product page (a bearer
// token), a new item shows live without a reload, marking it read in one tab moves the badge
// in the other, and both pages are accessible at phone and desktop widths.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import {
  api, foreignRequests, launch, mint, open, screenshot, seriousViolations, stack, until,
} from "./browser.mjs";

let browser;
let user;
let token;

before(async () => {
  browser = await launch();
  const made = await api("POST", "/v1/users", stack.tokens.service, { email: "feed@example.com" });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  user = made.body.user_id;
  token = mint(user, "user");
  // The welcome (in-app too) has settled and is read: every test starts from 0 unread.
  await until("the welcome notification to settle", async () => {
    const h = await api("GET", "/v1/me/notifications", token);
    return h.body.items.length > 0 && h.body.items.every((n) => !["in_progress", "scheduled"].includes(n.status));
  });
  const read = await api("POST", "/v1/me/inbox/read-all", token);
  assert.equal(read.status, 200, JSON.stringify(read.body));
});
after(async () => { await browser?.close(); });

async function sendInApp(subject) {
  const sent = await api("POST", "/v1/notifications", stack.tokens.service, {
    recipients: [{ user_id: user }], category: "orders", channels: ["in_app"],
    content: { subject, text: `${subject}: it is on its way.` },
    data: { url: `${stack.url}/demo/inbox` },
  });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  return sent.body.id;
}

const bell = (page, unread) =>
  page.getByRole("button", { name: new RegExp(`^Notifications\\s*${unread} unread$`) });

test("a new item shows live, is marked read in one tab, and the badge follows in the other", async () => {
  // Tab 1: the preference center (session cookie). Tab 2: the demo product page (token).
  const app = await open(browser, 1440);
  await app.goto(`${stack.url}/app#token=${token}`);
  await app.getByRole("heading", { name: "Channels" }).waitFor();
  await bell(app, 0).waitFor();
  const demo = await open(browser, 375);
  await demo.goto(`${stack.url}/demo/inbox#token=${token}`);
  await bell(demo, 0).waitFor();
  assert.equal(new URL(demo.url()).hash, "", "the token leaves the address bar at once");

  await sendInApp("Order 1042 shipped");
  // Live, no reload: the badge in both tabs, the item in the open feed.
  await bell(app, 1).waitFor();
  await bell(demo, 1).waitFor();
  await bell(app, 1).click();
  const item = app.locator("li", { hasText: "Order 1042 shipped" });
  await item.waitFor();
  assert.match(await item.innerText(), /it is on its way/);
  assert.equal(await item.getByRole("link", { name: /Open/ }).getAttribute("href"), `${stack.url}/demo/inbox`);
  // Opening the feed marked it seen (the badge counts unread, so it stays).
  await until("the item to be seen", async () =>
    (await api("GET", "/v1/me/inbox/counts", token)).body.unseen === 0);

  await item.getByRole("button", { name: /Mark read/ }).click();
  await bell(app, 0).waitFor();
  // The other tab follows without a reload.
  await bell(demo, 0).waitFor();
  assert.deepEqual((await api("GET", "/v1/me/inbox/counts", token)).body, { unread: 0, unseen: 0 });

  // Archived from the demo tab: it leaves the app tab's feed.
  await bell(demo, 0).click();
  await demo.locator("li", { hasText: "Order 1042 shipped" }).getByRole("button", { name: /Archive/ }).click();
  await item.waitFor({ state: "detached" });

  for (const page of [app, demo]) {
    assert.deepEqual(foreignRequests(page), []);
    assert.deepEqual(page.consoleErrors, []);
  }
  await app.context().close();
  await demo.context().close();
});

for (const width of [375, 1440]) {
  test(`the feed is accessible at ${width} px, open with items`, async () => {
    await sendInApp(`A note for ${width} px`);
    const page = await open(browser, width);
    await page.goto(`${stack.url}/demo/inbox#token=${token}`);
    await page.getByRole("button", { name: /^Notifications\s*[1-9][0-9]* unread$/ }).click();
    await page.locator("li", { hasText: `A note for ${width} px` }).waitFor();
    assert.deepEqual(await seriousViolations(page), []);
    // The open feed fits the viewport.
    const box = await page.locator("notify-inbox .panel").boundingBox();
    assert.ok(box.x >= 0 && box.x + box.width <= width, `the feed overflows: ${JSON.stringify(box)}`);
    await screenshot(page, `inbox-${width}`);
    assert.deepEqual(page.consoleErrors, []);
    await page.context().close();
  });
}
