// The console and the portal in a real browser: the real binary on a fresh SQLite file, Debian's
// Chromium driven by playwright-core. An admin signs in, sets the programme up, creates a reward
// and a rule; a shopper signs up in the portal (on a phone-sized screen); a purchase is posted
// through the API; the shopper sees the points, redeems the reward and sees the coupon with its
// QR code. Screenshots of each step go to artifacts/screenshots/.
//
// Run: cargo build -p fidelis && cd browser-tests && npm ci && node --test tests/
// FIDELIS_BIN and CHROMIUM override the binary and browser paths.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const bin = process.env.FIDELIS_BIN || join(root, "target", "debug", "fidelis");
const browserPath = process.env.CHROMIUM || "/usr/bin/chromium";
const shots = process.env.SCREENSHOTS || join(root, "artifacts", "screenshots");
const TENANT = "maison";
const OWNER = "owner@maison.example";
const PASSWORD = "browser-test-password";

let dir, server, base, posKey, browser;

function cli(...args) {
  return execFileSync(bin, args, { encoding: "utf8", env: { ...process.env, FIDELIS_LOG: "warn" } }).trim();
}

async function startServer(url) {
  const child = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--database-url", url, "--jobs-interval-secs", "0"], {
    env: { ...process.env, FIDELIS_LOG: "info" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.logs = "";
  child.stderr.on("data", (d) => { child.logs += d.toString(); });
  const address = await new Promise((ok, fail) => {
    let out = "";
    const timer = setTimeout(() => fail(new Error("the server did not start:\n" + child.logs)), 30_000);
    child.stdout.on("data", (d) => {
      out += d.toString();
      const m = out.match(/listening on (http:\/\/[0-9.:]+)/);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
    child.on("exit", (code) => fail(new Error(`the server exited (${code}):\n${child.logs}`)));
  });
  return { child, address };
}

async function api(method, path, body) {
  const r = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${posKey}`, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${text}`);
  return JSON.parse(text);
}

async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

before(async () => {
  assert.ok(existsSync(bin), `build the binary first (cargo build -p fidelis): ${bin}`);
  mkdirSync(shots, { recursive: true });
  dir = mkdtempSync(join(tmpdir(), "fidelis-browser-"));
  const url = `sqlite://${join(dir, "test.db")}`;
  cli("admin", "create", "--database-url", url, "--tenant", TENANT, "--email", OWNER, "--role", "owner", "--password", PASSWORD);
  posKey = cli("keys", "create", "--database-url", url, "--tenant", TENANT, "--scope", "pos", "--label", "browser test").split("\n").pop();
  ({ child: server, address: base } = await startServer(url));
  browser = await chromium.launch({
    executablePath: browserPath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("an admin sets the programme up, a shopper joins, buys and sees the points", async () => {
  // The admin, on a desktop screen.
  const admin = await browser.newContext({ viewport: { width: 1360, height: 900 }, locale: "fr-FR" });
  const a = await admin.newPage();
  a.on("dialog", (d) => d.accept());
  await a.goto(base + "/admin");
  await assert.doesNotReject(a.waitForURL(/\/admin\/login/));
  await shot(a, "01-admin-sign-in");
  await a.fill("input[name=email]", OWNER);
  await a.fill("input[name=password]", PASSWORD);
  await a.click("button[type=submit]");
  await a.waitForURL(base + "/admin");
  assert.match(await a.textContent("h1"), /Tableau de bord/);
  await shot(a, "02-admin-dashboard");

  // Programme: points are spendable at once, and named after the shop's currency.
  await a.goto(base + "/admin/settings");
  await a.fill("input[name=pending_days]", "0");
  await a.fill("input[name=earn_rate]", "2");
  await a.click("form[action='/admin/settings'] button[type=submit]");
  await a.waitForSelector(".alert-ok");
  await shot(a, "03-admin-programme");

  // Branding: the portal becomes the retailer's.
  await a.goto(base + "/admin/branding");
  await a.fill("input[name=display_name]", "Maison Lumière");
  await a.fill("input[name=points_name]", "étoiles");
  await a.fill("input[name=primary_color]", "#7a1f3d");
  await a.fill("input[name=welcome_title]", "Le club Maison Lumière");
  await a.click("form[action='/admin/branding'] button[type=submit]");
  await a.waitForSelector(".alert-ok");
  await shot(a, "04-admin-branding");

  // A reward of the catalogue.
  await a.goto(base + "/admin/rewards");
  await a.fill("input[name=title]", "Bon d’achat 10 €");
  await a.selectOption("select[name=kind]", "fixed_discount");
  await a.fill("input[name=points_cost]", "100");
  await a.fill("textarea[name=description]", "10 € de remise sur votre prochain achat.");
  await a.fill("input[name=value]", "10.00");
  await a.click("form[action='/admin/rewards'] button[type=submit]");
  await a.waitForSelector(".alert-ok");
  assert.match(await a.textContent(".table"), /Bon d’achat 10 €/);
  await shot(a, "05-admin-reward");

  // A rule: double points on orders of 50 euros or more, checked as it is typed.
  await a.goto(base + "/admin/rules");
  await a.fill("input[name=name]", "Bonus panier 50 €");
  await a.fill("input[name=condition]", "event.total >= ");
  await a.waitForSelector("#condition-check .check-err");
  await a.fill("input[name=condition]", "event.total >= 50");
  await a.waitForSelector("#condition-check .check-ok");
  await a.selectOption("select[name=effect]", "points");
  await a.fill("input[name=amount]", "25");
  await a.click("form[action='/admin/rules'] button[type=submit]");
  await a.waitForSelector(".alert-ok");
  assert.match(await a.textContent(".table"), /Bonus panier 50 €/);
  await a.fill("input[name=total]", "80.00");
  await a.click("form[action='/admin/rules/dry-run'] button[type=submit]");
  await a.waitForSelector("#dry-run .dry-total");
  await shot(a, "06-admin-rule");

  // The shopper, on a phone.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, locale: "fr-FR", isMobile: true, hasTouch: true });
  const m = await phone.newPage();
  m.on("dialog", (d) => d.accept());
  await m.goto(`${base}/m/${TENANT}`);
  assert.match(await m.textContent("h1"), /Le club Maison Lumière/);
  await shot(m, "07-portal-landing");
  await m.click(`a[href='/m/${TENANT}/signup']`);
  await m.fill("input[name=name]", "Chloé Petit");
  await m.fill("input[name=email]", "chloe@example.com");
  await m.fill("input[name=password]", "chloe-password-1");
  await m.check("input[name=marketing_email]");
  await shot(m, "08-portal-sign-up");
  await m.click("form button[type=submit]");
  await m.waitForURL(`${base}/m/${TENANT}`);
  assert.equal((await m.textContent("[data-balance]")).trim(), "0");
  await shot(m, "09-portal-new-member");

  // A purchase from the till, through the API.
  const member = await api("GET", "/api/v1/members/lookup?email=chloe%40example.com");
  const sale = await api("POST", "/api/v1/events/purchase", {
    member: { id: member.id },
    order_id: "paris-01-000042",
    channel: "pos",
    store_id: "paris-01",
    currency: "EUR",
    total: "59.90",
    lines: [{ sku: "bougie-42", category: "maison", quantity: 1, unit_price: "59.90" }],
  });
  assert.equal(sale.points, 119 + 25, "2 points per euro, plus the rule's 25 for 50 euros or more");

  // The shopper sees the points.
  await m.reload();
  const shown = (await m.textContent("[data-balance]")).replace(/\s/g, "");
  assert.equal(Number(shown), sale.balance.available);
  assert.match(await m.textContent(".lines"), /paris-01-000042/);
  await shot(m, "10-portal-points");

  // The shopper redeems the reward and sees the coupon.
  await m.click(`a[href='/m/${TENANT}/rewards']`);
  await m.waitForSelector(".reward");
  await shot(m, "11-portal-rewards");
  await m.click(".reward button[type=submit]");
  await m.waitForURL(/\/coupons\//);
  const code = (await m.textContent("[data-coupon-code]")).trim();
  assert.match(code, /^[0-9A-Z]{4}(-[0-9A-Z]{2,4})+$/);
  assert.ok(await m.isVisible("svg.qr"));
  await shot(m, "12-portal-coupon");
  await m.goto(`${base}/m/${TENANT}`);
  assert.equal(Number((await m.textContent("[data-balance]")).replace(/\s/g, "")), sale.balance.available - 100);

  // The admin finds the shopper and the purchase.
  await a.goto(base + "/admin/members?q=chloe");
  await a.click("text=Chloé Petit");
  await a.waitForSelector("text=paris-01-000042");
  assert.match(await a.textContent("body"), new RegExp(code));
  await shot(a, "13-admin-member");

  await admin.close();
  await phone.close();
});
