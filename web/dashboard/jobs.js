/* DePU dashboard, Jobs section: the user's jobs, one job's log as it grows, and its outputs when it ends.
 *
 * app.js signs in and then announces it ("depu:signed-in", with its API function, which carries the session);
 * this file only listens, so it needs nothing else from app.js. A job's log is polled every ~2 s from the
 * cursor the last page gave (a page answering "more" is followed at once) and polling stops when the job has
 * finished and every line was given; then the outputs are listed as short-lived download links.
 * Log lines come from providers' machines, which DePU treats as hostile: every line, name and message goes
 * into the page as a text node or textContent, never as HTML.
 */
(function () {
  "use strict";

  var query = new URLSearchParams(window.location.search);
  var LOG_POLL_MS = Math.min(10000, Math.max(500, Number(query.get("logpoll")) || 2000));
  var LIST_POLL_MS = 10000;
  var MAX_PANE_LINES = 5000;  // older lines leave the pane (the whole log stays downloadable through the API)
  var STATUS_TEXT = { queued: "waiting for a machine", assigned: "starting", running: "running",
                      succeeded: "succeeded", failed: "failed", cancelled: "cancelled", expired: "expired" };
  var api = null;
  var card = null;
  var listTimer = null;
  var logTimer = null;
  var linkTimer = null;
  var viewing = null;  // { jobId, cursor, generation } of the job whose view is open
  var generation = 0;  // bumps when the view changes, so a late answer for another job is dropped

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function part(name) { return card.querySelector("[data-part=" + name + "]"); }

  function jobPath(jobId, rest) { return "/jobs/" + encodeURIComponent(jobId) + rest; }

  function formatBytes(size) {
    if (size === null || size === undefined) return "";
    var units = ["B", "KB", "MB", "GB"];
    var value = Number(size);
    var unit = 0;
    while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
    return (unit ? value.toFixed(1) : String(value)) + " " + units[unit];
  }

  function stateText(job) {
    var text = STATUS_TEXT[job.status] || String(job.status);
    if (job.phase === "setup") text += " · setting up (not billed)";
    return text;
  }

  // ------------------------------------------------------------------ the card
  function build() {
    card = document.getElementById("runs-card");
    var list = element("div");
    list.dataset.part = "list";
    var view = element("div", "run");
    view.dataset.part = "view";
    view.hidden = true;
    var head = element("div", "run-head");
    var back = element("button", "run-back", "‹ Jobs");
    back.type = "button";
    back.addEventListener("click", closeJob);
    var id = element("span", "mono");
    id.dataset.part = "id";
    var state = element("span", "badge");
    state.dataset.part = "state";
    head.append(back, id, state);
    var bar = element("div", "progress");
    var fill = element("div");
    fill.dataset.part = "progress";
    bar.append(fill);
    var message = element("div", "hint");
    message.dataset.part = "message";
    var log = element("pre", "run-log");
    log.dataset.part = "log";
    log.setAttribute("aria-live", "polite");
    log.setAttribute("aria-label", "job log");
    var outputsTitle = element("h3", "", "Outputs");
    var outputs = element("div");
    outputs.dataset.part = "outputs";
    var note = element("p", "error-note");
    note.dataset.part = "note";
    note.hidden = true;
    view.append(head, bar, message, log, outputsTitle, outputs, note);
    card.replaceChildren(element("h2", "", "Jobs: live logs and outputs"), list, view);
  }

  function showNote(text) {
    var note = part("note");
    note.textContent = text || "";
    note.hidden = !text;
  }

  // ------------------------------------------------------------------ the list
  function loadList() {
    clearTimeout(listTimer);
    if (!api || viewing) return;
    api("GET", "/jobs?limit=20").then(function (answer) {
      if (!api || viewing) return;
      if (answer.status === 200) renderList(answer.data.jobs || []);
      listTimer = later(loadList, LIST_POLL_MS);
    }).catch(function () { listTimer = later(loadList, LIST_POLL_MS); });
  }

  function renderList(jobs) {
    var box = part("list");
    if (!jobs.length) return box.replaceChildren(element("p", "empty", "None yet: rent a GPU with /rent_gpu."));
    var list = element("ul", "rows run-list");
    jobs.forEach(function (job) {
      var row = element("li");
      row.dataset.jobId = job.job_id;
      row.dataset.status = job.status;
      var open = element("button", "run-open", job.job_id.slice(0, 14));
      open.type = "button";
      open.addEventListener("click", function () { openJob(job.job_id); });
      row.append(open, element("span", "", stateText(job) + " · " + job.workload + " · " + job.gpu_class));
      list.append(row);
    });
    box.replaceChildren(list);
  }

  // ------------------------------------------------------------------ one job
  function openJob(jobId) {
    clearTimeout(listTimer);
    generation += 1;
    viewing = { jobId: jobId, cursor: "0:0", generation: generation };
    part("list").hidden = true;
    part("view").hidden = false;
    part("view").dataset.jobId = jobId;
    part("view").dataset.finished = "false";
    part("id").textContent = jobId;
    part("state").textContent = "…";
    part("message").textContent = "";
    part("log").replaceChildren();
    part("log").dataset.lines = "0";
    part("outputs").replaceChildren(element("p", "empty", "Listed when the job ends."));
    showNote("");
    pollLog();
  }

  function closeJob() {
    stopJob();
    viewing = null;
    part("view").hidden = true;
    part("list").hidden = false;
    loadList();
  }

  function stopJob() {
    generation += 1;
    clearTimeout(logTimer);
    clearTimeout(linkTimer);
  }

  // polling pauses while the tab is hidden (as app.js's does) and picks up from its cursor when shown again
  document.addEventListener("visibilitychange", function () {
    if (document.hidden || !api) return;
    if (!viewing) loadList();
    else if (part("view").dataset.finished !== "true") pollLog();
  });

  function later(run, ms) { return document.hidden ? null : setTimeout(run, ms); }

  function current(seen) { return viewing && viewing.generation === seen ? viewing : null; }

  function pollLog() {
    clearTimeout(logTimer);
    var seen = viewing && viewing.generation;
    if (!api || !seen || viewing.busy) return;  // one request at a time: two with one cursor would repeat lines
    viewing.busy = true;
    api("GET", jobPath(viewing.jobId, "/logs?cursor=" + encodeURIComponent(viewing.cursor))).then(function (answer) {
      var view = current(seen);
      if (!view) return;
      view.busy = false;
      if (answer.status === 404) return showNote("No such job of yours.");
      if (answer.status !== 200) {  // 401: app.js renews the session (or signs out, which stops this)
        logTimer = later(pollLog, LOG_POLL_MS);
        return;
      }
      var page = answer.data;
      showNote("");
      renderJob(page.job);
      appendLines(page.lines || []);
      view.cursor = page.cursor;
      if (page.more) {
        logTimer = setTimeout(pollLog, 0);
      } else if (page.finished) {
        part("view").dataset.finished = "true";
        loadOutputs(seen);
      } else {
        logTimer = later(pollLog, LOG_POLL_MS);
      }
    }).catch(function () {
      var view = current(seen);
      if (!view) return;
      view.busy = false;
      logTimer = later(pollLog, LOG_POLL_MS);
    });
  }

  function renderJob(job) {
    part("state").textContent = stateText(job);
    part("view").dataset.status = job.status;
    part("message").textContent = job.error && job.finished ? "Reason: " + job.error : (job.message || "");
    var done = Math.max(0, Math.min(1, Number(job.progress) || 0));
    part("progress").style.width = (job.status === "succeeded" ? 100 : done * 100) + "%";
  }

  function appendLines(lines) {
    if (!lines.length) return;
    var pane = part("log");
    var atBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 24;
    var batch = document.createDocumentFragment();
    lines.forEach(function (line) { batch.appendChild(document.createTextNode(line + "\n")); });
    pane.appendChild(batch);
    while (pane.childNodes.length > MAX_PANE_LINES) pane.removeChild(pane.firstChild);
    pane.dataset.lines = String(Number(pane.dataset.lines || 0) + lines.length);
    if (atBottom) pane.scrollTop = pane.scrollHeight;
  }

  // ------------------------------------------------------------------ outputs
  function loadOutputs(seen) {
    clearTimeout(linkTimer);
    var view = current(seen);
    if (!api || !view) return;
    api("GET", jobPath(view.jobId, "/outputs")).then(function (answer) {
      if (!current(seen)) return;
      if (answer.status !== 200) {
        linkTimer = setTimeout(function () { loadOutputs(seen); }, LOG_POLL_MS);
        return;
      }
      renderOutputs(answer.data.outputs || []);
      // links die after a few minutes: fetch fresh ones shortly before, while this view stays open
      if (answer.data.links_expire_at) {
        var wait = Math.max(30000, answer.data.links_expire_at * 1000 - Date.now() - 30000);
        linkTimer = setTimeout(function () { loadOutputs(seen); }, wait);
      }
    }).catch(function () {
      if (current(seen)) linkTimer = setTimeout(function () { loadOutputs(seen); }, LOG_POLL_MS);
    });
  }

  function renderOutputs(outputs) {
    var box = part("outputs");
    if (!outputs.length) return box.replaceChildren(element("p", "empty", "This job left no output files."));
    var list = element("ul", "rows run-outputs");
    outputs.forEach(function (output) {
      var row = element("li");
      row.dataset.output = output.name;
      if (output.state === "ok" && /^https?:\/\//.test(String(output.url || ""))) {
        var link = element("a", "mono", output.name);
        link.href = output.url;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        link.setAttribute("download", output.name);
        row.append(link, element("span", "", formatBytes(output.size)));
      } else {
        row.append(element("span", "mono", output.name), element("span", "hint",
          output.state === "withheld" ? "withheld: changed after the job ended" : "no longer stored"));
      }
      list.append(row);
    });
    box.replaceChildren(list);
  }

  // ------------------------------------------------------------------ sign-in and out
  document.addEventListener("depu:signed-in", function (event) {
    api = event.detail && event.detail.api;
    if (!api) return;
    if (!card) build();
    card.hidden = false;
    loadList();
  });

  document.addEventListener("depu:signed-out", function () {
    api = null;
    clearTimeout(listTimer);
    stopJob();
    viewing = null;
    if (card) {
      card.hidden = true;
      card.replaceChildren();
      card = null;
    }
  });
})();
