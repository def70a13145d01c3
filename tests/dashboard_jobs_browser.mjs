// Drives Debian's Chromium (headless) through the Mini App's Jobs section for tests/test_dashboard_jobs_browser.py
// and writes what it saw as JSON. Usage: node tests/dashboard_jobs_browser.mjs <scenario.json> <result.json>
// The scenario opens the page, opens one job from the Jobs list, tells the test (by writing `openedFile`) that
// the job's view is open, so the test's agent starts shipping log lines, and waits until the job has finished
// and its outputs are listed. Inside the page, a MutationObserver notes when each log line appeared and what
// the job's state was then; a securitypolicyviolation listener notes anything the page's CSP had to block.
// Once the outputs are listed it waits `settleMs` more and counts the log requests made meanwhile.
import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

const [scenarioFile, resultFile] = process.argv.slice(2);
const scenario = JSON.parse(readFileSync(scenarioFile, "utf8"));
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"];

function instrument() {
  window.__logSeen = [];
  window.__cspViolations = [];
  document.addEventListener("securitypolicyviolation", (event) => {
    window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI || ""}`.trim());
  });
  new MutationObserver((mutations) => {
    for (const mutation of mutations) {
      const pane = mutation.target.closest ? mutation.target.closest(".run-log") : null;
      if (!pane) continue;
      const view = pane.closest(".run");
      for (const node of mutation.addedNodes) {
        window.__logSeen.push({ text: node.textContent.replace(/\n$/, ""), t: Date.now(), nodeType: node.nodeType,
                                status: view ? view.dataset.status || null : null });
      }
    }
  }).observe(document, { childList: true, subtree: true });
}

function inspect() {
  const view = document.querySelector("#runs-card .run");
  const anchors = [...document.querySelectorAll("#runs-card .run-outputs a")];
  return {
    state: document.body.dataset.state || null,
    listed: [...document.querySelectorAll("#runs-card .run-list li")].map((row) => row.dataset.jobId),
    viewStatus: view ? view.dataset.status || null : null,
    viewFinished: view ? view.dataset.finished === "true" : false,
    stateText: (document.querySelector("#runs-card .run-head .badge") || {}).textContent || "",
    pane: (document.querySelector("#runs-card .run-log") || {}).textContent || "",
    paneElements: document.querySelectorAll("#runs-card .run-log *").length,
    images: document.querySelectorAll("img").length,
    scripts: [...document.scripts].map((script) => script.getAttribute("src")),
    xss: window.__xss === undefined ? null : String(window.__xss),
    outputs: anchors.map((a) => ({ text: a.textContent, href: a.href, target: a.target, rel: a.rel })),
    outputRows: [...document.querySelectorAll("#runs-card .run-outputs li")].map((row) => row.textContent),
    logSeen: window.__logSeen || [],
    cspViolations: window.__cspViolations || [],
    cardBackground: getComputedStyle(document.getElementById("runs-card")).backgroundColor,
    paneColor: document.querySelector("#runs-card .run-log") ? getComputedStyle(document.querySelector("#runs-card .run-log")).color : null,
    scrollWidth: document.documentElement.scrollWidth,
    viewportWidth: window.innerWidth,
  };
}

const profile = mkdtempSync(join(tmpdir(), "depu-chromium-"));
const requests = [];
const consoleErrors = [];
const context = await chromium.launchPersistentContext(profile, {
  executablePath: scenario.executablePath || "/usr/bin/chromium", headless: true, args: FLAGS,
  viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
});
let result;
try {
  context.on("request", (request) => requests.push(request.url()));
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  await page.addInitScript(instrument);
  await page.goto(scenario.url, { waitUntil: "load", timeout: 20000 });
  const row = `#runs-card .run-list li[data-job-id="${scenario.jobId}"] .run-open`;
  await page.waitForSelector(row, { timeout: scenario.timeoutMs });
  const listedFirst = await page.evaluate(inspect);
  await page.click(row);
  await page.waitForSelector("#runs-card .run:not([hidden])", { timeout: 5000 });
  writeFileSync(scenario.openedFile, JSON.stringify({ opened_at: Date.now() }));
  await page.waitForFunction(
    (count) => {
      const view = document.querySelector("#runs-card .run");
      return view && view.dataset.finished === "true"
        && document.querySelectorAll("#runs-card .run-outputs li").length === count;
    },
    scenario.outputs, { timeout: scenario.timeoutMs, polling: 100 },
  );
  const seen = await page.evaluate(inspect);
  // polling must stop once the job has finished: count the log requests over a few more poll intervals
  const logRequests = () => requests.filter((url) => url.includes("/logs?")).length;
  const logRequestsAtEnd = logRequests();
  await page.waitForTimeout(scenario.settleMs || 0);
  seen.logRequestsAfterEnd = logRequests() - logRequestsAtEnd;
  seen.logRequests = logRequests();
  if (scenario.screenshot) {
    mkdirSync(dirname(scenario.screenshot), { recursive: true });
    await page.screenshot({ path: scenario.screenshot, fullPage: true });
  }
  result = { ok: true, listedFirst: listedFirst.listed, ...seen, requests, consoleErrors };
} catch (error) {
  let seen = {};
  try { seen = await context.pages()[0].evaluate(inspect); } catch (e) { /* page gone */ }
  result = { ok: false, failure: String(error), ...seen, requests, consoleErrors };
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
writeFileSync(resultFile, JSON.stringify(result, null, 2));
