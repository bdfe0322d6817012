// The admin console (/console) in a real browser against `notifyctl up`: an admin finds a dead
// delivery, re-drives it after a confirmation that says how many will move, and sees it sent
// on its attempt timeline; search and stats; a digest's folded notifications, each linked; a
// user's token opens nothing.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import {
  api, foreignRequests, launch, open, screenshot, sendSettled, seriousViolations, stack, until,
} from "./browser.mjs";

let browser;
// A webhook endpoint that answers 410 (gone: a permanent failure) until it is healed.
let healed = false;
const hook = createServer((req, res) => {
  req.resume();
  req.on("end", () => { res.writeHead(healed ? 204 : 410); res.end(); });
});

before(async () => {
  browser = await launch();
  await new Promise((r) => hook.listen(0, "127.0.0.1", r));
});
after(async () => {
  await browser?.close();
  hook.close();
});

async function signedIn(width = 1440) {
  const page = await open(browser, width);
  await page.goto(`${stack.url}/console#token=${stack.tokens.admin}`);
  try {
    await page.getByRole("navigation", { name: "Console" }).waitFor();
  } catch {
    throw new Error(`/console did not load: "${await page.locator("#status").innerText()}" ${page.consoleErrors}`);
  }
  return page;
}

test("an admin finds a dead delivery, re-drives it and sees it sent", async () => {
  const url = `http://127.0.0.1:${hook.address().port}/hook`;
  const dead = await sendSettled({
    recipients: [{ webhook: { url } }], category: "orders", content: { text: "order shipped" },
  });
  assert.equal(dead.deliveries[0].status, "dead", JSON.stringify(dead));

  const page = await signedIn();
  await page.getByRole("link", { name: "Dead letters" }).click();
  await page.locator("#dead-form").getByLabel("Error code").fill("webhook_410");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.getByText("1 dead letter matches.").waitFor();
  assert.deepEqual(await seriousViolations(page), []);
  await screenshot(page, "console-dead-letters-desktop");

  // Cancelling moves nothing; confirming moves exactly the one listed.
  await page.getByRole("button", { name: "Re-drive 1" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByText("Re-drive 1 dead letter?").waitFor();
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await page.getByText("Nothing re-driven.").waitFor();
  healed = true;
  await page.getByRole("button", { name: "Re-drive 1" }).click();
  await dialog.getByRole("button", { name: "Re-drive" }).click();
  await page.getByText("Re-drove 1.").waitFor();
  await page.getByText("0 dead letters match.").waitFor();

  // The notification's page: its delivery sent on the second attempt, with the re-drive.
  await page.goto(`${stack.url}/console#/notifications/${dead.id}`);
  const heading = page.getByRole("heading", { level: 3 });
  await until("the re-driven delivery to be sent", async () => {
    await page.reload();
    try {
      await heading.waitFor();
    } catch {
      throw new Error(`no delivery shown: "${await page.locator("#status").innerText()}" ${page.consoleErrors}`);
    }
    return (await heading.innerText()).endsWith(": sent");
  });
  const timeline = await page.locator("ol.timeline").innerText();
  assert.match(timeline, /Attempt 1 at .*permanent failure via webhook .*webhook_410/);
  assert.match(timeline, /Re-driven at .* by admin \(dead letter\): attempt 1 → 2/);
  assert.match(timeline, /Attempt 2 at .*: sent via webhook/);
  assert.deepEqual(await seriousViolations(page), []);
  await screenshot(page, "console-notification-desktop");
  assert.deepEqual(foreignRequests(page), []);
  assert.deepEqual(page.consoleErrors, []);
  await page.context().close();
});

for (const [width, name] of [[1440, "desktop"], [375, "phone"]]) {
  test(`search and stats at ${width} px (${name})`, async () => {
    const page = await signedIn(width);
    await page.locator("#search-form").getByLabel("Channel").selectOption("webhook");
    await page.getByRole("button", { name: "Search" }).click();
    // The unfiltered first page is replaced by webhook notifications only.
    await until("only webhook notifications listed", async () => {
      const rows = await page.locator("#results tbody tr").allInnerTexts();
      return rows.length > 0 && rows.every((r) => r.includes("webhook"));
    });
    assert.deepEqual(await seriousViolations(page), []);
    await screenshot(page, `console-notifications-${name}`);
    // A result opens the notification's page.
    await page.locator("#results tbody tr a").first().click();
    await page.getByRole("heading", { level: 3 }).first().waitFor();
    const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(wide <= 0, `the notification page is ${wide} px wider than the screen`);
    assert.deepEqual(await seriousViolations(page), []);
    if (name === "phone") await screenshot(page, "console-notification-phone");

    await page.getByRole("link", { name: "Stats" }).click();
    await page.getByText(/Accept → sent: p50 \d+ ms/).waitFor();
    assert.match(await page.locator("#stats-chart table").innerText(), /webhook/);
    // Over time: a column per bucket with deliveries, for every channel or the one chosen.
    const series = page.locator("#stats-series svg");
    assert.match(await series.getAttribute("aria-label"), /^Deliveries of every channel per bucket: .*\d+ sent/);
    assert.ok((await page.locator("#stats-series svg rect").count()) > 0);
    await page.locator("#series-form").getByLabel("Channel").selectOption("webhook");
    assert.match(await series.getAttribute("aria-label"), /^Deliveries of webhook per bucket: /);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than the screen`);
    assert.deepEqual(await seriousViolations(page), []);
    await screenshot(page, `console-stats-${name}`);
    // The other views pass the same checks at this width.
    for (const [link, ready, shot] of [
      ["Dead letters", "#dead-count", "console-dead-letters"],
      ["Templates", "#template-open", "console-templates"],
    ]) {
      await page.getByRole("link", { name: link }).click();
      await page.locator(ready).waitFor();
      const wider = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(wider <= 0, `${link} is ${wider} px wider than the screen`);
      assert.deepEqual(await seriousViolations(page), []);
      if (name === "phone") await screenshot(page, `${shot}-phone`);
    }
    await page.context().close();
  });
}

test("an admin writes a template with a live preview per locale; a broken one says why", async () => {
  const page = await signedIn();
  await page.getByRole("link", { name: "Templates" }).click();
  await page.getByLabel("Template name").fill("order-shipped");
  await page.getByRole("button", { name: "Open" }).click();
  await page.getByText("order-shipped is new").waitFor();
  const text = page.getByLabel("Text", { exact: true });
  const preview = page.locator("#preview");
  await page.getByLabel("Subject").fill("Order {{ number }}");
  await text.fill("Your order {{ number }} is on its way.");
  await page.getByLabel("Data to preview with (JSON)").fill('{"number": 42}');
  await preview.getByText("Your order 42 is on its way.").waitFor();
  await preview.getByText("Order 42", { exact: true }).waitFor();

  await text.fill("Your order {{ number ");
  await page.getByText(/This template does not render \(en\): variant: /).waitFor();
  await text.fill("Your order {{ number }} is on its way.");
  await preview.getByText("Your order 42 is on its way.").waitFor();

  await page.getByLabel(/^Add a locale/).fill("de");
  await page.getByRole("button", { name: "Add", exact: true }).click();
  await text.fill("Ihre Bestellung {{ number }} ist unterwegs.");
  await preview.getByText("Ihre Bestellung 42 ist unterwegs.").waitFor();
  assert.deepEqual(await seriousViolations(page), []);
  await screenshot(page, "console-templates-desktop");
  await page.getByRole("button", { name: "Save template" }).click();
  await page.getByText("Saved order-shipped (de, en).").waitFor();
  const saved = await api("GET", "/v1/admin/templates/order-shipped", stack.tokens.admin);
  assert.equal(saved.body.locales.de.text, "Ihre Bestellung {{ number }} ist unterwegs.");
  assert.equal(saved.body.locales.en.text, "Your order {{ number }} is on its way.");
  assert.equal(saved.body.locales.en.subject, "Order {{ number }}");
  assert.deepEqual(foreignRequests(page), []);
  await page.context().close();
});

test("an admin sees what a digest folded, and where each folded notification went", async () => {
  // Three sends with a 2 s digest window to one address: folded, then one digest on its own.
  const ids = [];
  for (const i of [1, 2, 3]) {
    const sent = await api("POST", "/v1/notifications", stack.tokens.service, {
      recipients: [{ email: "digest.browser@example.com" }], category: "comments",
      content: { subject: `Browser comment ${i}`, text: `Comment number ${i}` },
      digest: { key: "browser-digest", window: "2s" },
    });
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    assert.equal(sent.body.deliveries[0].status, "digested", JSON.stringify(sent.body));
    ids.push(sent.body.id);
  }
  const link = await until("the first send's digest to close", async () => {
    const n = await api("GET", `/v1/notifications/${ids[0]}`, stack.tokens.service);
    return n.body.deliveries[0].digest?.notification_id && n.body.deliveries[0].digest;
  }, 60_000);
  const carrier = (await api("GET", `/v1/notifications/${link.notification_id}`, stack.tokens.admin)).body;
  assert.ok(carrier.digest.items >= 1, JSON.stringify(carrier));

  const page = await signedIn();
  await page.goto(`${stack.url}/console#/notifications/${link.notification_id}`);
  await page.getByRole("heading", { name: "What this digest folded" }).waitFor();
  const items = page.locator("#digest-items li");
  await until("the folded items to show", async () => (await items.count()) === carrier.digest.items);
  await page.getByRole("link", { name: "Browser comment 1" }).click();
  await page.getByText(`Folded into a digest, sent as notification ${link.notification_id}.`).waitFor();
  assert.deepEqual(await seriousViolations(page), []);
  await page.context().close();
});

test("a user's token opens no console", async () => {
  const page = await open(browser);
  await page.goto(`${stack.url}/console#token=${stack.tokens.user}`);
  await page.getByText("This console is for admins.").waitFor();
  assert.equal(await page.getByRole("navigation", { name: "Console" }).isHidden(), true);
  // And the admin API refuses the session's token whatever the page does.
  const answer = await page.evaluate(async () => (await fetch("/v1/admin/stats")).status);
  assert.equal(answer, 403);
  await page.context().close();
});
