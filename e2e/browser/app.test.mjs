// The preference center (/app) in a real browser: signed in from a link, a channel switched
// off and saved through the API, accessible, nothing loaded from elsewhere, at phone and
// desktop widths.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { api, foreignRequests, launch, open, screenshot, seriousViolations, stack } from "./browser.mjs";

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

for (const [width, name] of [[1440, "desktop"], [375, "phone"]]) {
  test(`a user switches a channel off from /app (${name})`, async () => {
    const token = stack.tokens.user;
    // Start from every channel on.
    const start = await api("PUT", "/v1/me/preferences", token, { channels: {}, categories: {} });
    assert.equal(start.status, 200, JSON.stringify(start.body));

    const page = await open(browser, width);
    await page.goto(`${stack.url}/app#token=${token}`);
    const sms = page.getByLabel("SMS", { exact: true });
    await sms.waitFor();
    assert.equal(new URL(page.url()).hash, "", "the token leaves the address bar at once");
    assert.ok(await sms.isChecked());
    await screenshot(page, `app-${name}`);

    await sms.uncheck();
    await page.getByText("Saved: SMS is off.").waitFor();
    const prefs = await api("GET", "/v1/me/preferences", token);
    assert.equal(prefs.body.channels.sms, false, JSON.stringify(prefs.body));
    // A reload keeps the session (the cookie) and shows what was saved.
    await page.reload();
    await page.getByLabel("SMS", { exact: true }).waitFor();
    assert.equal(await page.getByLabel("SMS", { exact: true }).isChecked(), false);

    assert.deepEqual(await seriousViolations(page), []);
    assert.deepEqual(foreignRequests(page), []);
    assert.deepEqual(page.consoleErrors, []);
    await page.context().close();
  });
}

test("without a session /app says how to sign in, and an admin's token is not a user's", async () => {
  const page = await open(browser);
  await page.goto(`${stack.url}/app`);
  await page.getByText("You are signed out.", { exact: false }).waitFor();
  await page.goto(`${stack.url}/app#token=${stack.tokens.admin}`);
  await page.getByText("This page is for the people who receive notifications.").waitFor();
  assert.equal(await page.locator("#content").isHidden(), true);
  await page.context().close();
});
