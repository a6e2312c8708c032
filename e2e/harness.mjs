// Starts atelier (`serve --demo`, a fresh data folder, a free port) and Debian's
// Chromium, and gives the tests what they need to drive them.

import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync } from "node:fs";
import { tmpdir, homedir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const ADMIN = { email: "admin@example.com", password: "e2e admin orchid kettle" };

function atelierBinary() {
  if (process.env.ATELIER_BIN) return process.env.ATELIER_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(homedir(), ".cache", "atelier", "target");
  return join(target, "debug", "atelier");
}

/** Starts the server and resolves once it listens; `stop()` ends it. */
export async function startAtelier() {
  const dir = mkdtempSync(join(tmpdir(), "atelier-e2e-"));
  const child = spawn(atelierBinary(), ["serve", "--demo"], {
    cwd: dir,
    env: {
      PATH: process.env.PATH,
      ATELIER_BIND: "127.0.0.1:0",
      ATELIER_ADMIN_EMAIL: ADMIN.email,
      ATELIER_ADMIN_PASSWORD: ADMIN.password,
      ATELIER_LOG_LEVEL: process.env.E2E_LOG ? "debug" : "info",
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("atelier did not start:\n" + log)), 60_000);
    child.stderr.on("data", (chunk) => {
      log += chunk.toString();
      if (process.env.E2E_LOG) process.stderr.write(chunk);
      const found = log.match(/listening on (http:\/\/[0-9.:]+)/);
      if (found) { clearTimeout(timer); resolve(found[1]); }
    });
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`atelier exited (${code}):\n${log}`)); });
  });
  return {
    url,
    log: () => log,
    stop: () => new Promise((resolve) => { child.once("exit", resolve); child.kill("SIGTERM"); }),
  };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
  });
}

export const VIEWPORTS = {
  desktop: { width: 1280, height: 860 },
  phone: { width: 390, height: 844, isMobile: true, hasTouch: true, deviceScaleFactor: 2 },
};

/**
 * A browser context that fails the test on any page error or CSP violation.
 * `problems` collects them; check it at the end.
 */
export async function newContext(browser, base, viewport = VIEWPORTS.desktop) {
  const { isMobile, hasTouch, deviceScaleFactor, ...size } = viewport;
  const context = await browser.newContext({
    baseURL: base,
    viewport: size,
    isMobile: Boolean(isMobile),
    hasTouch: Boolean(hasTouch),
    deviceScaleFactor: deviceScaleFactor || 1,
  });
  const problems = [];
  context.on("page", (page) => watch(page, problems));
  return { context, problems };
}

function watch(page, problems) {
  page.on("pageerror", (e) => problems.push(`page error on ${page.url()}: ${e.message}`));
  page.on("console", (m) => {
    const text = m.text();
    if (m.type() === "error" && !/Failed to load resource: the server responded with a status of 4\d\d/.test(text)) {
      problems.push(`console error on ${page.url()}: ${text}`);
    }
    if (/Content Security Policy/i.test(text)) problems.push(`CSP violation on ${page.url()}: ${text}`);
  });
}

export const SCREENSHOTS = new URL("./screenshots/", import.meta.url).pathname;
mkdirSync(SCREENSHOTS, { recursive: true });

export async function screenshot(page, name) {
  // From the top, so the sticky header sits where a person would see it.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}
