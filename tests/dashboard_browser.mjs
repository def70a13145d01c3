// Drives Debian's Chromium (headless) through the dashboard scenarios the Python test describes, and prints
// what it saw as JSON. Usage: node tests/dashboard_browser.mjs <scenarios.json> <result.json>
// Each scenario gets a fresh profile (--user-data-dir), a phone viewport, and a log of every request made,
// so the test can prove the page talks to nobody but its own origin.
import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

const [scenarioFile, resultFile] = process.argv.slice(2);
const config = JSON.parse(readFileSync(scenarioFile, "utf8"));
const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

// Runs in the page: what each chart canvas holds, counted per series colour.
function inspectPage() {
  const style = getComputedStyle(document.documentElement);
  const hex = (name) => {
    const value = style.getPropertyValue(name).trim();
    const m = /^#([0-9a-f]{6})$/i.exec(value);
    return m ? [0, 2, 4].map((i) => parseInt(m[1].slice(i, i + 2), 16)) : null;
  };
  const colours = { s1: hex("--series-1"), s2: hex("--series-2"), s3: hex("--series-3"), s4: hex("--series-4") };
  const canvases = [...document.querySelectorAll("canvas")].filter((c) => !c.hidden && c.width > 0).map((canvas) => {
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    const counts = { painted: 0, s1: 0, s2: 0, s3: 0, s4: 0 };
    const columns = { s1: new Set(), s2: new Set(), s3: new Set(), s4: new Set() };
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] === 0) continue;
      counts.painted += 1;
      for (const [key, rgb] of Object.entries(colours)) {
        if (rgb && data[i + 3] > 200 && Math.abs(data[i] - rgb[0]) + Math.abs(data[i + 1] - rgb[1]) + Math.abs(data[i + 2] - rgb[2]) < 30) {
          counts[key] += 1;
          columns[key].add((i / 4) % canvas.width);
        }
      }
    }
    // how much of the width each series' line spans (a line squeezed into one column is not a chart)
    for (const key of Object.keys(columns)) counts[key + "Span"] = columns[key].size / canvas.width;
    return { id: canvas.id || null, chart: canvas.dataset.chart || null, points: Number(canvas.dataset.points || 0),
             width: canvas.width, height: canvas.height, ...counts };
  });
  return {
    state: document.body.dataset.state || null,
    theme: document.body.dataset.theme || null,
    polls: Number(document.body.dataset.polls || 0),
    error: document.getElementById("error").hidden ? "" : document.getElementById("error").textContent,
    who: document.getElementById("who").textContent,
    legends: [...document.querySelectorAll(".legend .key")].map((node) => node.textContent),
    jobs: [...document.querySelectorAll(".job")].map((node) => node.dataset.jobId),
    credits: document.getElementById("credits").textContent,
    forks: document.getElementById("forks").textContent,
    background: getComputedStyle(document.body).backgroundColor,
    cardBackground: getComputedStyle(document.querySelector(".card")).backgroundColor,
    scrollWidth: document.documentElement.scrollWidth,
    viewportWidth: window.innerWidth,
    hash: window.location.hash,
    telegramReady: Boolean(window.__depuReadyCalled),
    canvases,
  };
}

async function run(scenario) {
  const profile = mkdtempSync(join(tmpdir(), "depu-chromium-"));
  const requests = [];
  const consoleErrors = [];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: config.executablePath || "/usr/bin/chromium",
    headless: true,
    args: FLAGS,
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
  });
  try {
    context.on("request", (request) => requests.push(request.url()));
    const page = context.pages()[0] || (await context.newPage());
    page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
    page.on("pageerror", (error) => consoleErrors.push(String(error)));
    if (scenario.injectTelegram) {
      await page.addInitScript((webApp) => {
        window.Telegram = { WebApp: { ...webApp, ready() { window.__depuReadyCalled = true; }, expand() {} } };
      }, scenario.injectTelegram);
    }
    await page.goto(scenario.url, { waitUntil: "load", timeout: 20000 });
    const waitFor = scenario.waitFor || "ready";
    await page.waitForFunction(
      ({ state, minPolls, minPoints, legend }) => {
        if (document.body.dataset.state !== state) return false;
        if (state !== "ready") return true;
        if (Number(document.body.dataset.polls || 0) < minPolls) return false;
        const charts = [...document.querySelectorAll("canvas.job-chart")];
        if (minPoints && !charts.some((c) => Number(c.dataset.points || 0) >= minPoints)) return false;
        if (legend && ![...document.querySelectorAll(".legend .key")].some((n) => n.textContent === legend)) return false;
        return true;
      },
      { state: waitFor, minPolls: scenario.minPolls || 1, minPoints: scenario.minPoints || 0, legend: scenario.legend || "" },
      { timeout: scenario.timeoutMs || 20000, polling: 100 },
    );
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
    let made = {};
    if (scenario.makeKey) {  // the API keys card: name a key, switch scopes, make it, read it once, revoke it
      await page.fill("#key-name", scenario.makeKey.name);
      for (const scope of scenario.makeKey.untick || []) await page.uncheck(`input[name=scope][value="${scope}"]`);
      await page.click("#key-create");
      await page.waitForFunction(() => document.getElementById("new-key").textContent.startsWith("dpk_")
        && document.querySelectorAll("#keys li").length === 1, null, { timeout: 15000, polling: 100 });
      made.newKey = await page.textContent("#new-key");
      made.keysListed = await page.textContent("#keys");
      await page.click("#keys li .revoke");
      await page.waitForFunction(() => document.querySelectorAll("#keys li").length === 0, null, { timeout: 15000, polling: 100 });
      made.keysAfterRevoke = await page.textContent("#keys");
    }
    const seen = { ...(await page.evaluate(inspectPage)), ...made };
    if (scenario.screenshot) {
      mkdirSync(dirname(scenario.screenshot), { recursive: true });
      await page.screenshot({ path: scenario.screenshot, fullPage: true });
    }
    return { name: scenario.name, ok: true, ...seen, requests, consoleErrors };
  } catch (error) {
    let seen = {};
    try { seen = await context.pages()[0].evaluate(inspectPage); } catch (e) { /* page gone */ }
    return { name: scenario.name, ok: false, failure: String(error), ...seen, requests, consoleErrors };
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

const results = [];
for (const scenario of config.scenarios) {
  results.push(await run(scenario));
}
writeFileSync(resultFile, JSON.stringify(results, null, 2));
