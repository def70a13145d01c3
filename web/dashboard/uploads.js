/* DePU dashboard: upload an input file of the job being set up in the chat (files over Telegram's 20 MB).
 *
 * The chat's /rent_gpu → "My own job" flow, at its input files step, is the job draft. This card asks the
 * dashboard API for an upload link for one file (a presigned POST: its key and size cap are fixed by DePU's
 * signed policy), then posts the file straight to storage with the form's fields and the file last, as S3
 * requires. It reads the tab's session like app.js (sessionStorage), and writes user data with textContent.
 */
(function () {
  "use strict";

  var STORAGE_KEY = "depu.dashboard.session";
  var apiBase = (function () {
    var path = window.location.pathname;
    var at = path.lastIndexOf("/dashboard/app");
    return (at >= 0 ? path.slice(0, at) : "") + "/dashboard";
  })();

  function token() {
    try {
      var saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
      return saved && saved.token ? saved.token : null;
    } catch (e) { return null; }
  }

  function element(tag, attributes, text) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) { node.setAttribute(name, attributes[name]); });
    if (text) node.textContent = text;
    return node;
  }

  function card() {
    var section = element("section", { "class": "card", id: "upload-card" });
    section.appendChild(element("h2", {}, "Upload an input file"));
    section.appendChild(element("p", { "class": "hint" },
      "For a file over 20 MB of the job you are setting up in the chat (/rent_gpu → My own job, at the input " +
      "files step). Your code finds it in inputs/."));
    var form = element("form", { id: "upload-form" });
    form.appendChild(element("input", { id: "upload-file", type: "file", "aria-label": "input file" }));
    form.appendChild(element("button", { id: "upload-send", type: "submit" }, "Upload"));
    section.appendChild(form);
    section.appendChild(element("p", { id: "upload-status", "class": "hint", role: "status" }));
    return section;
  }

  function say(text) { document.getElementById("upload-status").textContent = text; }

  function askLink(file) {
    return fetch(apiBase + "/uploads", {
      method: "POST", cache: "no-store", credentials: "omit",
      headers: { "Accept": "application/json", "Content-Type": "application/json", "Authorization": "Bearer " + token() },
      body: JSON.stringify({ file_name: file.name, size: file.size })
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.status !== 201) throw new Error(data.error || "No upload link (" + response.status + ")");
        return data;
      });
    });
  }

  function post(link, file) {
    var form = new FormData();
    Object.keys(link.fields).forEach(function (name) { form.append(name, link.fields[name]); });
    form.append("file", file);  // last: storage reads the fields before the file
    return fetch(link.url, { method: "POST", body: form, credentials: "omit" }).then(function (response) {
      if (!response.ok) throw new Error("Storage refused the file (" + response.status + ")");
      return link;
    });
  }

  function upload(event) {
    event.preventDefault();
    var file = document.getElementById("upload-file").files[0];
    if (!file) { say("Choose a file first."); return; }
    if (!token()) { say("Sign in first."); return; }
    var button = document.getElementById("upload-send");
    button.disabled = true;
    say("Uploading " + file.name + "…");
    askLink(file).then(function (link) { return post(link, file); }).then(function (link) {
      say("Uploaded " + link.name + ". Tap Done in the chat to go on.");
    }).catch(function (error) {
      say(error.message);
    }).then(function () { button.disabled = false; });
  }

  function install() {
    var dashboard = document.getElementById("dashboard");
    if (!dashboard || document.getElementById("upload-card")) return;
    var jobs = document.getElementById("jobs-card");
    var section = card();
    dashboard.insertBefore(section, jobs ? jobs.nextSibling : null);
    document.getElementById("upload-form").addEventListener("submit", upload);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", install);
  else install();
})();
