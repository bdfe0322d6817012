// What every browser test shares: the stack under test (NOTIFY_STACK: a `notifyctl up`
// stack.json), Debian's chromium driven by playwright-core, axe-core, screenshots.
import { execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);

export const stack = JSON.parse(readFileSync(process.env.NOTIFY_STACK, "utf8"));

// Headless, no sandbox (CI runs as root), no background traffic to Google.
export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
      "--disable-default-apps", "--no-first-run"],
  });
}

// A page at `width` whose every request is recorded, to assert none leaves the stack.
export async function open(browser, width = 1440) {
  const context = await browser.newContext({
    viewport: { width, height: width < 600 ? 812 : 900 },
  });
  const page = await context.newPage();
  // Fail fast: a page that works answers in well under this.
  page.setDefaultTimeout(10_000);
  page.requests = [];
  page.on("request", (r) => page.requests.push(r.url()));
  page.consoleErrors = [];
  page.on("console", (m) => m.type() === "error" && page.consoleErrors.push(m.text()));
  page.on("pageerror", (e) => page.consoleErrors.push(String(e)));
  return page;
}

// Every request the page made went to the stack itself.
export function foreignRequests(page) {
  return page.requests.filter((u) => !u.startsWith(stack.url + "/") && !u.startsWith("data:"));
}

// axe-core's serious and critical violations on the page (run through the debugger, so the
// page's CSP does not apply to it).
export async function seriousViolations(page) {
  const source = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
  await page.evaluate(source);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
}

// A full-page PNG into NOTIFY_SCREENSHOTS (when set: `make screenshots` writes docs/pages/).
export async function screenshot(page, name) {
  const dir = process.env.NOTIFY_SCREENSHOTS;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: `${dir}/${name}.png`, fullPage: true });
}

// The public API with a bearer token, for what a test sets up and checks.
export async function api(method, path, token, body) {
  const resp = await fetch(stack.url + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  return { status: resp.status, body: text ? JSON.parse(text) : null };
}

// Whether notification-service still holds `user`'s delivery profile in Redis (it is evicted
// when the user's preferences change, through Kafka: a test waits for that before sending).
export function profileCached(user) {
  const out = execFileSync("redis-cli", ["-h", "127.0.0.1", "--scan", "--pattern", `*profile:${user}`]);
  return out.toString().trim() !== "";
}

// Polls until `check()` is truthy (at most `ms`: a deadline against hanging, not a target).
export async function until(what, check, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const OPEN = new Set(["pending", "queued", "sending", "retrying"]);

// Sends `body` as the stack's service and waits until no delivery is open; the last view.
export async function sendSettled(body) {
  const sent = await api("POST", "/v1/notifications", stack.tokens.service, body);
  if (sent.status !== 202) throw new Error(`send answered ${sent.status}: ${JSON.stringify(sent.body)}`);
  return until(`notification ${sent.body.id} to settle`, async () => {
    const v = await api("GET", `/v1/notifications/${sent.body.id}`, stack.tokens.admin);
    return v.body.deliveries.every((d) => !OPEN.has(d.status)) && v.body;
  });
}

// A token signed with the stack's dev secret (HS256), as `notifyctl token` mints them.
export function mint(sub, role, ttlSecs = 600) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({
    sub, role, iat: now, exp: now + ttlSecs, iss: stack.jwt.iss, aud: stack.jwt.aud,
  })}`;
  const sig = createHmac("sha256", stack.jwt.secret).update(body).digest("base64url");
  return `${body}.${sig}`;
}
