// Drives Debian's Chromium (headless) through the Mini App's upload card: sign in with Telegram launch data,
// choose a file in #upload-file, press Upload, and report what the card said and every request made.
// Usage: node tests/uploads_browser.mjs <scenario.json> <result.json>
import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [scenarioFile, resultFile] = process.argv.slice(2);
const scenario = JSON.parse(readFileSync(scenarioFile, "utf8"));
const profile = mkdtempSync(join(tmpdir(), "depu-uploads-browser-"));
const requests = [];
const consoleErrors = [];
const context = await chromium.launchPersistentContext(profile, {
  executablePath: scenario.executablePath, headless: true, viewport: { width: 390, height: 844 },
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-dev-shm-usage"],
});
let result;
try {
  const page = context.pages()[0] || (await context.newPage());
  context.on("request", (request) => requests.push(`${request.method()} ${request.url()}`));
  page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
  await page.goto(scenario.url, { waitUntil: "load", timeout: 20000 });
  await page.waitForFunction(() => document.body.dataset.state === "ready" && document.getElementById("upload-card"),
                             null, { timeout: 20000, polling: 100 });
  await page.setInputFiles("#upload-file", { name: scenario.fileName, mimeType: "application/octet-stream",
                                             buffer: Buffer.from(scenario.fileBase64, "base64") });
  await page.click("#upload-send");
  await page.waitForFunction(() => /^(Uploaded|Storage|No upload|Start|The job)/.test(
    document.getElementById("upload-status").textContent), null, { timeout: 30000, polling: 100 });
  result = { ok: true, status: await page.textContent("#upload-status") };
} catch (error) {
  result = { ok: false, failure: String(error) };
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
writeFileSync(resultFile, JSON.stringify({ ...result, requests, consoleErrors }));
