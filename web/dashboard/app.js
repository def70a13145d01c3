/* DePU live dashboard: sign in the Telegram way, then poll the overview and draw it.
 *
 * Sign-in order: Telegram's launch data (inside Telegram), else a one-time code from the bot's browser link,
 * else a session kept from earlier in this tab. The session token lives in sessionStorage only (this tab).
 * Live updates are polling (API Gateway REST cannot push): every few seconds, paused while the tab is hidden.
 * All user data is put into the page with textContent, never as HTML.
 */
(function () {
  "use strict";

  var STORAGE_KEY = "depu.dashboard.session";
  var HISTORY_LIMIT = 300;
  var tg = window.DepuTelegram;
  var charts = window.DepuCharts;
  var query = new URLSearchParams(window.location.search);
  var pollMs = Math.min(60000, Math.max(1000, Number(query.get("poll")) || 5000));
  var apiBase = (function () {
    var path = window.location.pathname;
    var at = path.lastIndexOf("/dashboard/app");
    return (at >= 0 ? path.slice(0, at) : "") + "/dashboard";
  })();
  var session = null;
  var timer = null;
  var polls = 0;
  var jobHistory = {};
  var THEME = {
    bg_color: "--bg", text_color: "--text", hint_color: "--hint", link_color: "--link",
    button_color: "--button", button_text_color: "--button-text", secondary_bg_color: "--card",
    section_bg_color: "--card", accent_text_color: "--accent", destructive_text_color: "--danger"
  };

  function $(id) { return document.getElementById(id); }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setState(state) { document.body.dataset.state = state; }

  // ------------------------------------------------------------------ theme
  function applyTheme(params) {
    var root = document.documentElement.style;
    var applied = 0;
    Object.keys(THEME).forEach(function (key) {
      var value = params && params[key];
      if (typeof value === "string" && /^#[0-9a-fA-F]{3,8}$/.test(value)) {
        root.setProperty(THEME[key], value);
        applied += 1;
      }
    });
    if (params && typeof params.button_color === "string" && /^#[0-9a-fA-F]{3,8}$/.test(params.button_color)) {
      root.setProperty("--series-1", params.button_color);
    }
    if (applied) document.body.dataset.theme = "telegram";
  }

  // ------------------------------------------------------------------ messages
  function showError(message) {
    var box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  function showSignin(message) {
    $("loading").hidden = true;
    $("dashboard").hidden = true;
    $("live").hidden = true;
    $("signout").hidden = true;
    $("signin").hidden = false;
    if (message) showError(message);
    setState(message ? "error" : "signin");
    document.dispatchEvent(new CustomEvent("depu:signed-out"));
  }

  // ------------------------------------------------------------------ API
  function api(method, path, body) {
    var headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (session) headers["Authorization"] = "Bearer " + session.token;
    return fetch(apiBase + path, {
      method: method,
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit"
    }).then(function (response) {
      if (response.status === 204) return { status: 204, data: {} };
      return response.json().catch(function () { return {}; }).then(function (data) {
        return { status: response.status, data: data };
      });
    });
  }

  function openSession(body) {
    return api("POST", "/session", body).then(function (answer) {
      if (answer.status !== 201 || !answer.data.token) {
        throw new Error(answer.data.error || "Sign-in failed (" + answer.status + ")");
      }
      session = { token: answer.data.token, expires_at: answer.data.expires_at, user: answer.data.user || {} };
      try { sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session)); } catch (e) { /* private mode */ }
      return session;
    });
  }

  function storedSession() {
    try {
      var saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
      if (saved && saved.token && saved.expires_at * 1000 > Date.now()) return saved;
    } catch (e) { /* nothing kept */ }
    return null;
  }

  function forgetSession() {
    session = null;
    try { sessionStorage.removeItem(STORAGE_KEY); } catch (e) { /* nothing kept */ }
  }

  function signIn() {
    if (tg.initData) return openSession({ init_data: tg.initData });
    if (tg.loginCode) {
      var code = tg.loginCode;
      tg.forgetLoginCode();
      return openSession({ login_code: code });
    }
    if (tg.loginError) return Promise.reject(new Error("This login link is not valid; ask the bot for a new one with /webapp."));
    var saved = storedSession();
    if (saved) {
      session = saved;
      return Promise.resolve(saved);
    }
    return Promise.resolve(null);
  }

  // ------------------------------------------------------------------ polling
  function poll() {
    clearTimeout(timer);
    if (!session) return;
    api("GET", "/overview").then(function (answer) {
      if (answer.status === 401) {
        forgetSession();
        if (tg.initData) return openSession({ init_data: tg.initData }).then(poll);
        showSignin(answer.data.error || "Your dashboard session ended; open the dashboard again from the bot.");
        return null;
      }
      if (answer.status !== 200) throw new Error(answer.data.error || "The dashboard is unavailable (" + answer.status + ")");
      polls += 1;
      document.body.dataset.polls = String(polls);
      showError("");
      render(answer.data);
      schedule();
      return null;
    }).catch(function (error) {
      $("live").hidden = true;
      showError((error && error.message) || "Connection lost; retrying.");
      schedule();
    });
  }

  function schedule() {
    clearTimeout(timer);
    if (session && !document.hidden) timer = setTimeout(poll, pollMs);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && session) poll();
  });

  // ------------------------------------------------------------------ rendering
  function render(data) {
    $("loading").hidden = true;
    $("signin").hidden = true;
    $("dashboard").hidden = false;
    $("live").hidden = false;
    $("signout").hidden = false;
    var user = session.user || {};
    $("who").textContent = user.first_name || (user.username ? "@" + user.username : "user " + data.user_id);
    renderCredits(data.credits || {});
    renderJobs(data.jobs || {}, data.generated_at);
    renderForks(data.forks || {});
    renderWatches(data.watches || {});
    renderChain(data.chain || {});
    $("updated").textContent = "Updated " + new Date(data.generated_at * 1000).toLocaleTimeString() + " · every " + pollMs / 1000 + " s";
    setState("ready");
  }

  function empty(container, section, text) {
    container.replaceChildren(element("p", "empty", section.state === "unavailable" ? "Unavailable right now." : text));
  }

  function topUp() {
    $("topup-note").textContent = "Sending the invoice…";
    api("POST", "/topup", { stars: 50 }).then(function (answer) {
      $("topup-note").textContent = answer.status === 201 ? "The invoice is in your chat with the bot: pay it there."
        : (answer.data.error || "Could not send the invoice (" + answer.status + ")");
    });
  }

  function renderCredits(section) {
    var button = $("topup");
    if (button && !button.dataset.bound) { button.dataset.bound = "1"; button.addEventListener("click", topUp); }
    var box = $("credits");
    if (section.state !== "ok") return empty(box, section, "None yet: send /start to the bot.");
    box.replaceChildren.apply(box, [["available", "Available"], ["held", "Held by jobs"], ["earned", "Earned"]].map(function (pair) {
      var stat = element("div", "stat");
      stat.append(element("div", "value", charts.formatNumber(section[pair[0]] || 0)), element("div", "label", pair[1]));
      stat.dataset.field = pair[0];
      return stat;
    }));
  }

  function remember(job, now) {
    var kept = jobHistory[job.job_id] || (jobHistory[job.job_id] = {});
    (job.samples || []).forEach(function (sample) {
      var t = sample.t || now;
      kept[t] = sample;
    });
    var times = Object.keys(kept).map(Number).sort(function (a, b) { return a - b; });
    times.slice(0, Math.max(0, times.length - HISTORY_LIMIT)).forEach(function (t) { delete kept[t]; });
    return times.slice(-HISTORY_LIMIT).map(function (t) { return Object.assign({}, kept[t], { t: t }); });
  }

  function latest(samples, key) {
    for (var i = samples.length - 1; i >= 0; i--) if (samples[i][key] !== null && samples[i][key] !== undefined) return samples[i][key];
    return null;
  }

  function legend(samples, items) {
    var box = element("div", "legend");
    items.forEach(function (item) {
      var value = latest(samples, item.key);
      var key = element("span", "key " + item.css, item.label + " " + (value === null ? "–" : charts.formatNumber(value) + item.unit));
      key.dataset.metric = item.key;
      box.append(key);
    });
    return box;
  }

  function renderJobs(section, now) {
    var box = $("jobs");
    if (section.state !== "ok" || !(section.items || []).length) return empty(box, section, "None yet: rent a GPU with /rent_gpu.");
    box.replaceChildren.apply(box, section.items.map(function (job) {
      var samples = remember(job, now);
      var card = element("div", "job");
      card.dataset.jobId = job.job_id;
      var head = element("div", "job-head");
      head.append(element("span", "id", job.job_id.slice(0, 12)), element("span", "badge", job.status));
      if (job.gpu_class) head.append(element("span", "hint", job.gpu_class));
      if (job.workload) head.append(element("span", "hint", job.workload));
      card.append(head);
      if (job.progress !== null && job.progress !== undefined) {
        var bar = element("div", "progress");
        var fill = element("div");
        fill.style.width = Math.max(0, Math.min(100, Number(job.progress) <= 1 ? Number(job.progress) * 100 : Number(job.progress))) + "%";
        bar.append(fill);
        card.append(bar);
      }
      if (job.message) card.append(element("div", "hint", job.message));
      if (!samples.length) {
        card.append(element("p", "empty", "No GPU metrics yet."));
        return card;
      }
      var wrap = element("div", "charts");
      var first = element("div");
      var usage = element("canvas", "chart job-chart");
      usage.dataset.chart = "usage";
      first.append(legend(samples, [
        { key: "util", label: "GPU", unit: "%", css: "s1" },
        { key: "mem", label: "Memory", unit: "%", css: "s2" }
      ]), usage);
      var second = element("div");
      var heat = element("canvas", "chart job-chart");
      heat.dataset.chart = "thermal";
      second.append(legend(samples, [
        { key: "temp", label: "Temp", unit: "°C", css: "s3" },
        { key: "power", label: "Power", unit: " W", css: "s4" }
      ]), heat);
      wrap.append(first, second);
      card.append(wrap);
      // draw once the canvases are in the document (they need their laid-out size)
      requestAnimationFrame(function () {
        usage.dataset.points = String(charts.line(usage, { yMax: 100, unit: "%", series: [
          { color: "--series-1", points: samples.map(function (s) { return [s.t, s.util]; }) },
          { color: "--series-2", points: samples.map(function (s) { return [s.t, s.mem]; }) }
        ] }));
        heat.dataset.points = String(charts.line(heat, { series: [
          { color: "--series-3", points: samples.map(function (s) { return [s.t, s.temp]; }) },
          { color: "--series-4", points: samples.map(function (s) { return [s.t, s.power]; }) }
        ] }));
      });
      return card;
    }));
  }

  function rows(items, describe) {
    var list = element("ul", "rows");
    items.forEach(function (item) {
      var pair = describe(item);
      var row = element("li");
      row.append(element("span", "mono", pair[0]), element("span", "", pair[1]));
      list.append(row);
    });
    return list;
  }

  function barChart(canvasId, container, section, text, labels, series, describe, items) {
    var canvas = $(canvasId);
    var key = canvas.parentNode.querySelector(".legend");
    var shown = section.state === "ok" && items.length > 0;
    canvas.hidden = !shown;
    if (key) key.hidden = !shown;
    if (!shown) return empty(container, section, text);
    container.replaceChildren(rows(items, describe));
    requestAnimationFrame(function () {
      canvas.dataset.points = String(charts.bars(canvas, { labels: labels, series: series }));
    });
  }

  function ago(seconds) {
    if (!seconds) return "";
    var delta = Math.max(0, Date.now() / 1000 - seconds);
    if (delta < 90) return Math.round(delta) + " s ago";
    if (delta < 5400) return Math.round(delta / 60) + " min ago";
    return Math.round(delta / 3600) + " h ago";
  }

  // a fork's chain id as wallets need it; chain id 1 (kept on purpose at creation) carries the warning
  function chainIdText(chainId) {
    if (chainId === null || chainId === undefined) return "chain id: assigned when it starts";
    if (Number(chainId) === 1) return "chain id 1 (mainnet's) ⚠ what you sign here is valid on mainnet";
    return "chain id " + String(chainId);
  }

  function renderForks(section) {
    var items = section.items || [];
    barChart("forks-chart", $("forks"), section, "None yet: create one with /fork.",
      items.map(function (f) { return f.name; }),
      [{ color: "--series-1", values: items.map(function (f) { return Number(f.lag_blocks) || 0; }) }],
      function (f) {
        var lag = f.lag_blocks === null || f.lag_blocks === undefined ? "lag unknown" : charts.formatNumber(f.lag_blocks) + " blocks behind";
        var when = f.following ? " · following mainnet" : (f.synced_at ? " · synced " + ago(f.synced_at) : "");
        return [f.name + " · " + (f.status || ""), lag + when + " · " + chainIdText(f.chain_id)];
      },
      items);
    // why the fork's latest transaction reverted: the decoded reason and its call tree, one line per call
    items.forEach(function (f) {
      if (!f.last_revert) return;
      var box = element("div", "calltree");
      box.dataset.forkId = f.fork_id;
      box.appendChild(element("div", "calltree-title", f.name + ": why did " + String(f.last_revert.tx_hash).slice(0, 10) + "… revert? " + (f.last_revert.reason || "")));
      box.appendChild(element("pre", "calltree-lines", (f.last_revert.tree || []).join("\n")));
      $("forks").appendChild(box);
    });
  }

  function renderWatches(section) {
    var items = section.items || [];
    barChart("watches-chart", $("watches"), section, "None yet: watch an address with /watch.",
      items.map(function (w) { return w.label || w.address.slice(0, 8); }),
      [{ color: "--series-2", values: items.map(function (w) { return Number(w.inflow) || 0; }) },
       { color: "--series-4", values: items.map(function (w) { return Number(w.outflow) || 0; }) }],
      function (w) {
        var unit = w.unit ? " " + w.unit : "";
        return [w.label || w.address, "in " + charts.formatNumber(w.inflow) + unit + " · out " + charts.formatNumber(w.outflow) + unit];
      },
      items);
  }

  function renderChain(section) {
    var blocks = section.blocks || [];
    barChart("chain-chart", $("chain"), section, "None yet: the chain indexer has not run.",
      blocks.map(function (b) { return String(b.number).slice(-4); }),
      [{ color: "--series-1", values: blocks.map(function (b) { return Number(b.tx_count) || 0; }) }],
      function (b) { return ["block " + b.number, b.tx_count + " txs · " + b.transfers + " transfers"]; },
      blocks.slice(-5).reverse());
  }

  // ------------------------------------------------------------------ API keys
  // Loaded when the dashboard opens and after each change (not on every poll). The new key is put into the
  // page once, with textContent, and is gone from it at the next list or sign-out.
  function loadKeys() {
    return api("GET", "/api-keys").then(function (answer) {
      if (answer.status !== 200) throw new Error(answer.data.error || "API keys are unavailable (" + answer.status + ")");
      renderKeys(answer.data.keys || [], answer.data.max_keys);
    }).catch(function (error) { showError((error && error.message) || "API keys are unavailable."); });
  }

  function renderKeys(keys, maxKeys) {
    var box = $("keys");
    $("key-create").disabled = maxKeys !== undefined && keys.length >= maxKeys;
    if (!keys.length) return box.replaceChildren(element("p", "empty", "None yet."));
    var list = element("ul", "rows");
    keys.forEach(function (key) {
      var row = element("li");
      row.dataset.keyId = key.key_id;
      var state = key.expired ? "expired" : "until " + new Date(key.expires_at * 1000).toISOString().slice(0, 10);
      var used = key.last_used_at ? "used " + ago(key.last_used_at) : "never used";
      row.append(element("span", "mono", key.hint + " " + key.name),
                 element("span", "", key.scopes.join(", ") + " · " + state + " · " + used));
      var revoke = element("button", "revoke", "Revoke");
      revoke.type = "button";
      revoke.addEventListener("click", function () {
        revoke.disabled = true;
        api("DELETE", "/api-keys/" + encodeURIComponent(key.key_id)).then(function (answer) {
          if (answer.status !== 200) throw new Error(answer.data.error || "Revoking failed (" + answer.status + ")");
          return loadKeys();
        }).catch(function (error) { revoke.disabled = false; showError(error.message); });
      });
      row.append(revoke);
      list.append(row);
    });
    box.replaceChildren(list);
  }

  function createKey(event) {
    event.preventDefault();
    var form = $("key-form");
    var scopes = Array.prototype.slice.call(form.querySelectorAll("input[name=scope]:checked")).map(function (box) { return box.value; });
    var body = { name: $("key-name").value || null, scopes: scopes, days: Number($("key-days").value) };
    $("key-create").disabled = true;
    api("POST", "/api-keys", body).then(function (answer) {
      if (answer.status !== 201) throw new Error(answer.data.error || "The key was not made (" + answer.status + ")");
      $("new-key").textContent = answer.data.key;
      $("new-key-shown").hidden = false;
      $("key-name").value = "";
      showError("");
      return loadKeys();
    }).catch(function (error) { showError(error.message); }).then(function () {
      $("key-create").disabled = false;
    });
  }

  // ------------------------------------------------------------------ start
  function start() {
    applyTheme(tg.themeParams);
    tg.onThemeChanged(applyTheme);
    tg.ready();
    $("key-form").addEventListener("submit", createKey);
    $("new-key-copy").addEventListener("click", function () {
      if (navigator.clipboard) navigator.clipboard.writeText($("new-key").textContent);
    });
    $("signout").addEventListener("click", function () {
      $("new-key").textContent = "";
      $("new-key-shown").hidden = true;
      var ending = session;
      clearTimeout(timer);
      if (ending) api("DELETE", "/session");
      forgetSession();
      showSignin("");
    });
      var resizing = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizing);
      resizing = setTimeout(function () { if (session) poll(); }, 300);
    });
    signIn().then(function (opened) {
      if (!opened) return showSignin("");
      document.dispatchEvent(new CustomEvent("depu:signed-in", { detail: { api: api } }));  // jobs.js
      loadKeys();
      return poll();
    }).catch(function (error) {
      forgetSession();
      showSignin((error && error.message) || "Sign-in failed.");
    });
  }

  start();
})();
