// The studio in a real browser, against `atelier serve --demo`: the journey of a
// new user, an admin acting on them, and a screenshot of every page at desktop
// and phone width (in e2e/screenshots/).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { ADMIN, VIEWPORTS, launchBrowser, newContext, screenshot, startAtelier } from "./harness.mjs";

const USER = { email: `ada-${Date.now()}@example.com`, password: "velvet otter quantum lantern" };
const TIMEOUT = 30_000;

let server;
let browser;

before(async () => {
  server = await startAtelier();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function logIn(page, who) {
  await page.goto("/studio/login");
  await page.fill("#email", who.email);
  await page.fill("#password", who.password);
  await Promise.all([page.waitForURL(/\/studio\/chat/), page.click("main button[type=submit]")]);
}

/** Sends a chat message and waits until the answer has finished or stopped. */
async function send(page, model, text) {
  await page.selectOption("#model", model);
  await page.fill("#message", text);
  await page.press("#message", "Enter");
}

test("the journey of a new user, and an admin acting on them", { timeout: 180_000 }, async () => {
  const { context, problems } = await newContext(browser, server.url);
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);

  // Sign up, with a clear message for a weak password first.
  await page.goto("/studio/signup");
  await screenshot(page, "signup-desktop");
  await page.fill("#email", USER.email);
  await page.fill("#password", "password1234");
  await page.click("main button[type=submit]");
  await assert.doesNotReject(page.locator(".notice.error", { hasText: "too easy to guess" }).waitFor());
  await page.fill("#password", USER.password);
  await Promise.all([page.waitForURL(/\/studio\/login\?info=signed_up/), page.click("main button[type=submit]")]);
  await page.locator(".notice.ok", { hasText: "Your account is ready" }).waitFor();

  // A wrong password is refused in place; the right one lands in the chat.
  await page.fill("#email", USER.email);
  await page.fill("#password", "not my password at all");
  await page.click("main button[type=submit]");
  await page.locator(".notice.error", { hasText: "incorrect" }).waitFor();
  await screenshot(page, "login-desktop");
  await logIn(page, USER);

  // Chat: the answer streams in and is rendered as Markdown.
  await screenshot(page, "chat-empty-desktop");
  await send(page, "mock/chat", "Say hello in one line");
  const first = page.locator(".msg.assistant").first();
  await first.locator(".meta", { hasText: "tokens" }).waitFor();
  assert.match(await first.locator(".md").innerText(), /Say hello in one line/);
  assert.equal(await first.locator(".md strong").count(), 1, "Markdown bold rendered");
  await page.waitForURL(/\/studio\/chat\/[0-9a-f-]{36}$/);
  const conversationUrl = page.url();

  // Code is highlighted and can be copied.
  await send(page, "mock/chat", "Show me some code");
  const second = page.locator(".msg.assistant").nth(1);
  await second.locator(".meta", { hasText: "tokens" }).waitFor();
  await second.locator("pre code.hljs").waitFor();
  assert.equal(await second.locator("pre button.copy").count(), 1);

  // Stop a stream half-way: the partial answer stays, marked as stopped.
  await send(page, "mock/chat-slow", "Tell me a long story");
  const third = page.locator(".msg.assistant").nth(2);
  await page.waitForFunction(() => {
    const answers = document.querySelectorAll(".msg.assistant .md");
    return answers.length === 3 && answers[2].textContent.split(" ").length > 4;
  });
  await page.click("#stop");
  await third.locator(".meta", { hasText: "Stopped" }).waitFor();
  await page.locator("#send:not([disabled])").waitFor();
  await screenshot(page, "chat-desktop");
  await page.goto(conversationUrl);
  await page.locator(".msg.assistant.aborted .meta", { hasText: "Stopped before the end" }).waitFor();

  // Rename the conversation from the sidebar.
  const item = page.locator(".conversations li.current");
  await item.locator("[data-rename]").click();
  await item.locator("input[name=title]").fill("Greetings");
  await item.locator(".rename-form button").click();
  await item.locator(".title a", { hasText: "Greetings" }).waitFor();

  // Text.
  await page.click("nav >> text=Text");
  await page.fill("#prompt", "Explain tides to a child");
  await page.click("main button[type=submit]");
  await page.locator("#text-result .md", { hasText: "Explain tides to a child" }).waitFor();
  await screenshot(page, "text-desktop");

  // Images: generated, shown in the gallery, really loaded.
  await page.click("nav >> text=Images");
  await page.locator(".empty", { hasText: "No images yet" }).waitFor();
  await page.fill("#prompt", "A red fox in the snow");
  await page.selectOption("#aspect_ratio", "16:9");
  await page.click("main button[type=submit]");
  const image = page.locator("#gallery figure img").first();
  await image.waitFor();
  await page.waitForFunction(() => {
    const img = document.querySelector("#gallery figure img");
    return img && img.complete && img.naturalWidth > 0;
  });
  await screenshot(page, "images-desktop");

  // Text-to-video: the job's progress updates live, then the video plays.
  await page.click("nav >> text=Video");
  await page.fill("#prompt", "Waves on a beach at sunset");
  await page.click("main button[type=submit]");
  const job = page.locator("#jobs article.job").first();
  await job.waitFor();
  await job.locator("video").waitFor({ timeout: 60_000 });
  await assertPlays(page, "#jobs article.job video");
  await screenshot(page, "video-desktop");

  // Image-to-video from the image made above.
  await page.click("text=From an image");
  await page.locator(".picker input[type=radio]:checked").waitFor({ state: "attached" });
  await page.fill("#prompt", "The fox starts running");
  const jobsBefore = await page.locator("#jobs article.job").count();
  await page.click("main button[type=submit]");
  await page.waitForFunction((n) => document.querySelectorAll("#jobs article.job").length === n + 1, jobsBefore);
  await page.locator("#jobs article.job").first().locator("video").waitFor({ timeout: 60_000 });
  await assertPlays(page, "#jobs article.job video");
  await screenshot(page, "video-from-image-desktop");

  // History shows every kind.
  await page.click("nav >> text=History");
  for (const kind of ["chat", "text", "image", "video"]) {
    await page.locator("tbody .pill", { hasText: kind }).first().waitFor();
  }
  await screenshot(page, "history-desktop");
  const rows = await page.locator("tbody tr").count();
  assert.ok(rows >= 7, `history rows: ${rows}`);
  await screenshot(page, "history-desktop");

  await page.click("a[href='/studio/account']");
  await page.locator("h1", { hasText: "Account" }).waitFor();
  assert.equal(await page.locator("nav a", { hasText: "Admin" }).count(), 0, "no admin console for users");
  // What was spent today shows against the budget.
  assert.match(await page.locator("[data-testid=budget-1]").innerText(), /\$0\.\d+ of \$5\.00[\s\S]*left/);

  // An API key: created, shown once, works with the OpenAI-compatible API, revoked.
  await page.fill("#key-name", "notebook");
  await page.check("input[name=scope_chat]");
  await page.click("form.new-key button[type=submit]");
  const key = await page.locator("[data-testid=new-key]").inputValue();
  assert.match(key, /^atl_[0-9a-f]{12}_[0-9a-f]{64}$/);
  await screenshot(page, "account-desktop");
  const v1 = (k) => fetch(server.url + "/v1/chat/completions", {
    method: "POST",
    headers: { authorization: `Bearer ${k}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "mock/chat", messages: [{ role: "user", content: "hi from a script" }] }),
  });
  const answer = await v1(key);
  assert.equal(answer.status, 200);
  assert.match((await answer.json()).choices[0].message.content, /hi from a script/);
  await page.goto("/studio/account");
  assert.equal(await page.locator("[data-testid=new-key]").count(), 0, "the key is not shown again");
  await page.locator("tbody tr", { hasText: "notebook" }).locator("button", { hasText: "Revoke" }).click();
  await page.locator(".notice.ok", { hasText: "revoked" }).waitFor();
  assert.equal((await v1(key)).status, 401);

  // An admin promotes the user; the user's next page shows the admin console.
  const admin = await newContext(browser, server.url);
  const adminPage = await admin.context.newPage();
  adminPage.setDefaultTimeout(TIMEOUT);
  await logIn(adminPage, ADMIN);
  await adminPage.click("nav >> text=Admin");
  await adminPage.fill("#user-search", USER.email.slice(0, 12));
  await adminPage.locator("#users", { hasText: "matching" }).waitFor();
  assert.equal(await adminPage.locator("#users tbody tr").count(), 1, "the search finds the one user");
  // The admin caps the user's spending below what they have spent today.
  const budget = adminPage.locator(`[data-testid="budget-form-${USER.email}"]`);
  await adminPage.locator("#users details summary", { hasText: "Edit budget" }).click();
  await budget.locator("input[name=daily_usd]").fill("0.01");
  await budget.locator("button[type=submit]").click();
  await adminPage.locator("#users .notice.ok", { hasText: "saved" }).waitFor();
  assert.match(await adminPage.locator("#users .budget-cell").innerText(), /of \$0\.01 today/);
  const role = adminPage.locator(`[data-testid="role-${USER.email}"]`);
  await role.waitFor();
  await role.selectOption("admin");
  await adminPage.locator("#users-status .notice.ok", { hasText: "is now admin" }).waitFor();
  await screenshot(adminPage, "admin-desktop");

  // Over budget, the user's next generation is refused with a clear message.
  await page.click("nav >> text=Text");
  await page.fill("#prompt", "One more, please");
  await page.click("main button[type=submit]");
  await page.locator("#text-status .notice.error", { hasText: "budget" }).waitFor();

  await page.click("nav >> text=History");
  await page.locator("nav a", { hasText: "Admin" }).waitFor();
  await page.click("nav >> text=Admin");
  await page.locator("h1", { hasText: "Admin" }).waitFor();

  // Log out.
  await Promise.all([page.waitForURL(/\/studio\/login\?info=logged_out/), page.click("text=Log out")]);
  await page.goto("/studio/chat");
  await page.waitForURL(/\/studio\/login/);

  assert.deepEqual([...problems, ...admin.problems], [], "no page errors or CSP violations");
  await admin.context.close();
  await context.close();
});

/** Waits until the video has loaded and really advances when played. */
async function assertPlays(page, selector) {
  const played = await page.evaluate(async (sel) => {
    const video = document.querySelector(sel);
    video.muted = true;
    if (video.readyState < 2) {
      await new Promise((resolve, reject) => {
        video.addEventListener("loadeddata", resolve, { once: true });
        video.addEventListener("error", () => reject(new Error("video error " + (video.error && video.error.code))), { once: true });
        setTimeout(() => reject(new Error("video never loaded")), 15000);
      });
    }
    await video.play();
    await new Promise((resolve) => setTimeout(resolve, 600));
    return { time: video.currentTime, duration: video.duration, width: video.videoWidth };
  }, selector);
  assert.ok(played.duration > 1, `a real video: ${JSON.stringify(played)}`);
  assert.ok(played.time > 0, `it plays: ${JSON.stringify(played)}`);
}

test("every page at phone width", { timeout: 120_000 }, async () => {
  const { context, problems } = await newContext(browser, server.url, VIEWPORTS.phone);
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  await page.goto("/studio/login");
  await screenshot(page, "login-phone");
  await page.goto("/studio/signup");
  await screenshot(page, "signup-phone");
  // The admin sees every page, the admin console included.
  await logIn(page, ADMIN);
  await send(page, "mock/chat", "Hello from a phone, with some code please");
  await page.locator(".msg.assistant .meta", { hasText: "tokens" }).waitFor();
  await screenshot(page, "chat-phone");
  for (const name of ["text", "images", "video", "history", "account", "admin"]) {
    await page.goto(`/studio/${name}`);
    await page.locator("h1").first().waitFor();
    await screenshot(page, `${name}-phone`);
    // Nothing is wider than the phone (tables scroll inside their cards).
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= VIEWPORTS.phone.width + 1, `${name} is ${width}px wide on a ${VIEWPORTS.phone.width}px phone`);
  }
  assert.deepEqual(problems, []);
  await context.close();
});
