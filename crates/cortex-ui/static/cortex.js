// Cortex Plane dashboard behaviour. Loaded as a file (the Content-Security-Policy forbids inline
// scripts); htmx is configured through <meta name="htmx-config">.
(function () {
  "use strict";

  // Every event stream the page opens goes through `stream`: all are closed when the page is hidden
  // (navigation, back/forward cache), so pages no one sees never hold connections (a browser allows six
  // per host over HTTP/1.1; held ones stall the next navigation). A page restored from that cache reloads
  // instead of showing what it missed.
  var streams = [];
  function stream(url) {
    var source = new EventSource(url);
    streams = streams.filter(function (open) { return open.readyState !== EventSource.CLOSED; });
    streams.push(source);
    return source;
  }
  window.addEventListener("pagehide", function () {
    streams.forEach(function (open) { open.close(); });
    streams = [];
  });
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { window.location.reload(); }
  });

  // Theme: the stored choice wins over the system preference; applied before the body renders.
  var stored = null;
  try { stored = window.localStorage.getItem("cortex-theme"); } catch (e) { stored = null; }
  if (stored === "light" || stored === "dark") { document.documentElement.dataset.theme = stored; }

  function currentTheme() {
    var chosen = document.documentElement.dataset.theme;
    if (chosen) { return chosen; }
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  function flash(message) {
    var box = document.getElementById("flash");
    if (!box) { window.alert(message); return; }
    box.textContent = message;
    box.hidden = false;
  }

  // The API answers JSON; an error carries {"error": {"message": …}} (SPEC §2.3): show its words.
  function errorMessage(xhr) {
    try {
      var body = JSON.parse(xhr.responseText);
      if (body && body.error && body.error.message) { return body.error.message; }
    } catch (e) { /* not JSON */ }
    if (xhr.status === 0) { return "The server cannot be reached. Check the connection and try again."; }
    return "The request failed (HTTP " + xhr.status + ").";
  }

  document.addEventListener("click", function (event) {
    var toggle = event.target.closest("[data-theme-toggle]");
    if (!toggle) { return; }
    var next = currentTheme() === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    try { window.localStorage.setItem("cortex-theme", next); } catch (e) { /* private mode */ }
  });

  document.addEventListener("htmx:confirm", function (event) {
    var text = event.target.getAttribute("data-confirm-text");
    if (!text) { return; }
    event.preventDefault();
    if (window.confirm(text)) { event.detail.issueRequest(true); }
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    var type = xhr.getResponseHeader("Content-Type") || "";
    if (xhr.status === 401) {
      window.location.assign("/ui/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
      event.detail.shouldSwap = false;
      return;
    }
    if (xhr.status >= 400) {
      flash(errorMessage(xhr));
      event.detail.shouldSwap = false;
      event.detail.isError = false;
      return;
    }
    if (type.indexOf("application/json") === 0) { event.detail.shouldSwap = false; }
  });

  document.addEventListener("htmx:sendError", function () {
    flash("The server cannot be reached. Check the connection and try again.");
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var xhr = event.detail.xhr;
    if (!xhr || xhr.status >= 400) { return; }
    var then = event.detail.elt.getAttribute("data-on-success");
    if (then === "reload") { window.location.reload(); }
    else if (then === "reset") {
      // Stay on the page: empty the form and say it worked (e.g. a steering instruction).
      var form = event.detail.elt.closest("form") || event.detail.elt;
      form.reset();
      var result = form.querySelector("[data-result]");
      if (result) { result.textContent = form.getAttribute("data-success-text") || "Done."; }
    }
    else if (then && then.indexOf("show-secret:") === 0) {
      // A secret the API shows once (a new key): into its box, never into the page's URL or storage.
      try {
        var box = document.getElementById(then.slice(12));
        box.querySelector("code").textContent = JSON.parse(xhr.responseText).secret;
        box.hidden = false;
        box.focus();
      } catch (e) { window.location.reload(); }
    }
    else if (then && then.indexOf("goto:") === 0) { window.location.assign(then.slice(5)); }
    else if (then && then.indexOf("follow:") === 0) {
      // Go to a URL the JSON answer names (e.g. a provider's authorization page).
      try { window.location.assign(JSON.parse(xhr.responseText)[then.slice(7)]); } catch (e) { window.location.reload(); }
    }
    else if (then && then.indexOf("open:") === 0) {
      // Go to the page of what the request created: the prefix plus the id in the JSON answer.
      try { window.location.assign(then.slice(5) + encodeURIComponent(JSON.parse(xhr.responseText).id)); } catch (e) { window.location.reload(); }
    }
  });

  // JSON bodies for forms (extension "cortex-json"): `a.b` names nest objects, `name[]` collects arrays,
  // empty values are left out (so optional fields are absent, not "") unless the field has `data-keep-empty` (then null)
  // or `data-keep-empty-string` (then ""), a `data-json` field's value is parsed (later `a.b` fields refine it),
  // `data-number` inputs become numbers, `data-bool` ones booleans and `data-list` ones arrays of their
  // comma-separated parts.
  function encodeForm(parameters, elt) {
    var form = elt.closest("form") || elt;
    var object = {};
    parameters.forEach(function (value, key) {
      var input = form.querySelector("[name=\"" + key.replace(/"/g, "") + "\"]");
      var keepEmpty = input && (input.hasAttribute("data-keep-empty") || input.hasAttribute("data-keep-empty-string"));
      if (value === "" && !keepEmpty) { return; }
      if (input && input.hasAttribute("data-path-only")) { return; }
      if (input && input.hasAttribute("data-number")) { value = Number(value); }
      if (input && input.hasAttribute("data-bool")) { value = value === "true"; }
      if (input && input.hasAttribute("data-json")) {
        try { value = JSON.parse(value); } catch (e) { return; }
      } else if (input && input.hasAttribute("data-list")) {
        value = value.split(",").map(function (part) { return part.trim(); }).filter(function (part) { return part !== ""; });
      } else if (value === "" && !input.hasAttribute("data-keep-empty-string")) { value = null; }
      var isArray = key.slice(-2) === "[]";
      var path = (isArray ? key.slice(0, -2) : key).split(".");
      var target = object;
      for (var i = 0; i < path.length - 1; i++) {
        if (typeof target[path[i]] !== "object" || target[path[i]] === null) { target[path[i]] = {}; }
        target = target[path[i]];
      }
      var last = path[path.length - 1];
      if (isArray) { (target[last] = target[last] || []).push(value); } else { target[last] = value; }
    });
    form.querySelectorAll("[data-array]").forEach(function (field) {
      var name = field.getAttribute("data-array");
      if (!(name in object)) { object[name] = []; }
    });
    return JSON.stringify(object);
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.htmx) { return; }
    window.htmx.defineExtension("cortex-json", {
      onEvent: function (name, event) {
        if (name !== "htmx:configRequest") { return; }
        event.detail.headers["Content-Type"] = "application/json";
        // `data-path-from="field"`: the field's value completes the URL (e.g. the tool of a policy).
        var from = event.detail.elt.getAttribute && event.detail.elt.getAttribute("data-path-from");
        var field = from && event.detail.elt.querySelector("[name=\"" + from + "\"]");
        if (field) {
          event.detail.path += encodeURIComponent(field.value) + (event.detail.elt.getAttribute("data-path-suffix") || "");
        }
      },
      encodeParameters: function (xhr, parameters, elt) {
        xhr.overrideMimeType("text/json");
        return encodeForm(parameters, elt);
      }
    });
  });

  // Chat panel: the message goes through the API (`POST /agents/{id}/chat`); the reply streams from the
  // job's event stream. A dropped stream reconnects after 1 s, doubling to 30 s, resuming after the last
  // event seen (`last_event_id`), so no part of the reply is lost or shown twice.
  function followJob(jobId, reply, status) {
    var lastId = null;
    var delay = 1000;
    var finished = false;
    var source = null;
    var shownTurn = null;
    // Each SSE message is a stored event; what the event says is under `data` (SPEC §4.11).
    function data(event) {
      if (event.lastEventId) { lastId = event.lastEventId; }
      delay = 1000;
      try { return JSON.parse(event.data).data || {}; } catch (e) { return {}; }
    }
    function show(turn, text, append) {
      if (turn !== shownTurn) { reply.textContent = ""; shownTurn = turn; }
      reply.textContent = append ? reply.textContent + text : text;
    }
    function finish(text) {
      finished = true;
      status.textContent = text;
      if (source) { source.close(); }
    }
    function open() {
      var url = "/jobs/" + encodeURIComponent(jobId) + "/events";
      if (lastId) { url += "?last_event_id=" + encodeURIComponent(lastId); }
      source = stream(url);
      source.addEventListener("job.state", function (event) {
        var payload = data(event);
        // The link to a pending approval stays while the job waits for it.
        if (payload.to === "waiting_for_approval" && status.querySelector("a")) { return; }
        if (payload.to) { status.textContent = payload.to.replace(/_/g, " "); }
      });
      source.addEventListener("llm.delta", function (event) {
        var payload = data(event);
        if (payload.reset) { show(payload.turn, "", false); } else if (payload.text) { show(payload.turn, payload.text, true); }
      });
      source.addEventListener("llm.message", function (event) {
        var payload = data(event);
        if (payload.text) { show(payload.turn, payload.text, false); }
      });
      source.addEventListener("approval.requested", function (event) {
        var payload = data(event);
        status.textContent = "";
        var link = document.createElement("a");
        link.href = "/ui/approvals/" + encodeURIComponent(payload.approval_id || "");
        link.textContent = "Waiting for approval: " + (payload.summary || "a tool call");
        status.appendChild(link);
      });
      source.addEventListener("approval.decided", function (event) { data(event); status.textContent = "decided; continuing"; });
      source.addEventListener("job.completed", function (event) {
        var payload = data(event);
        if (payload.result && payload.result.response) { reply.textContent = payload.result.response; }
        finish("completed");
      });
      source.addEventListener("job.failed", function (event) {
        var payload = data(event);
        finish("failed" + (payload.error && payload.error.message ? ": " + payload.error.message : ""));
      });
      source.onerror = function () {
        source.close();
        if (finished) { return; }
        status.textContent = "connection lost; reconnecting";
        window.setTimeout(open, delay);
        delay = Math.min(delay * 2, 30000);
      };
    }
    open();
  }

  function bubble(transcript, who, text) {
    var item = document.createElement("div");
    item.className = "bubble " + who;
    var body = document.createElement("p");
    body.className = "text";
    body.textContent = text;
    item.appendChild(body);
    transcript.appendChild(item);
    return item;
  }

  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    var xhr = event.detail.xhr;
    if (!form.hasAttribute || !form.hasAttribute("data-chat") || !xhr || xhr.status >= 400) { return; }
    var answer;
    try { answer = JSON.parse(xhr.responseText); } catch (e) { return; }
    var transcript = document.getElementById(form.getAttribute("data-chat"));
    var input = form.querySelector("[name=text]");
    bubble(transcript, "user", input.value);
    input.value = "";
    var session = form.querySelector("[name=session_id]");
    if (session && answer.session_id) { session.value = answer.session_id; }
    var item = bubble(transcript, "agent", "");
    var status = document.createElement("p");
    status.className = "hint job-status";
    status.textContent = answer.status || "queued";
    item.appendChild(status);
    followJob(answer.job_id, item.querySelector(".text"), status);
  });

  // Live regions (`data-live`): follow an SSE route from the event the page was rendered at. An event of
  // a listed type makes the page out of date: reload it (`data-live-reload`) or offer a refresh link in
  // place of the notice (no layout shift). EventSource reconnects by itself and sends `Last-Event-ID`,
  // so nothing that happened while the connection was down is missed.
  function followLive(element) {
    var url = element.getAttribute("data-live");
    var after = element.getAttribute("data-live-after") || "0";
    var source = stream(url + (url.indexOf("?") < 0 ? "?" : "&") + "last_event_id=" + encodeURIComponent(after));
    var reload = element.hasAttribute("data-live-reload");
    function changed() {
      if (reload) { source.close(); window.location.reload(); return; }
      source.close();
      element.textContent = "Something changed since this page was loaded. ";
      var link = document.createElement("a");
      link.href = window.location.href;
      link.textContent = "Refresh";
      element.appendChild(link);
      element.classList.add("stale");
    }
    (element.getAttribute("data-live-events") || "").split(" ").forEach(function (name) {
      if (name) { source.addEventListener(name, changed); }
    });
    source.onopen = function () { element.classList.remove("offline"); };
    source.onerror = function () { element.classList.add("offline"); };
  }

  // Agent live output (`data-agent-stream`): the agent's SSE stream as one line per thing it does, streamed
  // model text gathered into one line per job and turn, health changes applied to the page's badges. From
  // the event the page was rendered at; a dropped stream reconnects after 1 s, doubling to 30 s, resuming
  // after the last event seen (`last_event_id`), so nothing is missed or shown twice.
  function followAgent(element) {
    var url = element.getAttribute("data-agent-stream");
    var lastId = element.getAttribute("data-live-after") || "0";
    var log = document.getElementById("event-log");
    var delay = 1000;
    var source = null;
    var streaming = {};
    var MAX_LINES = 200;
    function showEmpty() {
      if (log.children.length === 0) {
        var item = document.createElement("li");
        item.className = "event empty-log";
        item.textContent = log.getAttribute("data-empty");
        log.appendChild(item);
      }
    }
    function line(type, jobId, text) {
      var empty = log.querySelector(".empty-log");
      if (empty) { log.removeChild(empty); }
      var item = document.createElement("li");
      item.className = "event";
      var what = document.createElement("span");
      what.className = "event-type";
      what.textContent = type;
      item.appendChild(what);
      if (jobId) {
        var link = document.createElement("a");
        link.href = "/ui/jobs/" + encodeURIComponent(jobId);
        link.textContent = "job " + jobId.replace(/-/g, "").slice(-8);
        item.appendChild(link);
      }
      var body = document.createElement("span");
      body.className = "event-text";
      body.textContent = text;
      item.appendChild(body);
      log.appendChild(item);
      while (log.children.length > MAX_LINES) { log.removeChild(log.firstChild); }
      return body;
    }
    function summary(type, data) {
      switch (type) {
        case "job.state": return (data.from || "new") + " → " + (data.to || "").replace(/_/g, " ");
        case "llm.message": return data.text || (data.tool_calls ? "asked for tools" : "");
        case "tool.call": return (data.tool_ref || "") + " " + JSON.stringify(data.input || {});
        case "tool.result": return (data.tool_ref || "") + " " + (data.state || "") + ": " + (data.preview || "");
        case "approval.requested": return "waiting for a human: " + (data.summary || "");
        case "approval.decided": return (data.decision || "") + (data.reason ? ": " + data.reason : "");
        case "job.completed": return "completed";
        case "job.failed": return "failed" + (data.error && data.error.message ? ": " + data.error.message : "");
        case "agent.health": return (data.to || "") + (data.reason ? ": " + data.reason : "");
        default: return JSON.stringify(data).slice(0, 300);
      }
    }
    function health(data) {
      document.querySelectorAll("[data-health-badge]").forEach(function (badge) {
        badge.textContent = data.to;
        badge.className = "status s-" + data.to;
      });
      document.querySelectorAll("[data-health-text]").forEach(function (text) { text.textContent = data.to; });
      document.querySelectorAll("[data-health-reason]").forEach(function (text) { text.textContent = data.reason || "—"; });
    }
    function onMessage(event) {
      if (event.lastEventId) { lastId = event.lastEventId; }
      delay = 1000;
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      var data = message.data || {};
      var key = message.job_id + ":" + data.turn;
      if (event.type === "llm.delta") {
        if (data.reset) { if (streaming[key]) { streaming[key].textContent = ""; } return; }
        if (!streaming[key]) { streaming[key] = line("llm.delta", message.job_id, ""); }
        streaming[key].textContent += data.text || "";
        return;
      }
      if (event.type === "llm.message" && streaming[key]) {
        streaming[key].textContent = data.text || streaming[key].textContent;
        streaming[key].parentNode.querySelector(".event-type").textContent = "llm.message";
        delete streaming[key];
        return;
      }
      if (event.type === "agent.health") { health(data); }
      line(event.type, message.job_id, summary(event.type, data));
    }
    var TYPES = ["job.state", "llm.delta", "llm.message", "tool.call", "tool.result", "tool.denied", "approval.requested",
      "approval.decided", "steer.injected", "steer.acknowledged", "subagent.spawned", "subagent.finished", "cost.alert",
      "breaker.trip", "agent.health", "job.completed", "job.failed", "error"];
    function open() {
      source = stream(url + "?last_event_id=" + encodeURIComponent(lastId));
      TYPES.forEach(function (type) { source.addEventListener(type, onMessage); });
      source.onopen = function () { element.classList.remove("offline"); };
      source.onerror = function () {
        source.close();
        element.classList.add("offline");
        window.setTimeout(open, delay);
        delay = Math.min(delay * 2, 30000);
      };
    }
    showEmpty();
    open();
  }

  // Channel health (`data-channel-health`): the process's `channel.health` stream applied to the page's badges
  // (`data-channel-state="<id>"`) and last errors (`data-channel-error="<id>"`); each change is also said in the
  // notice itself (a polite live region, one line, so nothing below moves). On connect the stream sends every
  // channel's current state (it has no replay), so a reconnect catches up; a dropped stream reconnects after
  // 1 s, doubling to 30 s. A channel the page does not show (added elsewhere) turns the notice into a reload link.
  function followChannels(element) {
    var url = element.getAttribute("data-channel-health");
    var delay = 1000;
    var source = null;
    var added = false;
    function marked(attribute, id) {
      return Array.prototype.filter.call(document.querySelectorAll("[" + attribute + "]"), function (node) {
        return node.getAttribute(attribute) === id;
      });
    }
    function addedElsewhere() {
      added = true;
      element.textContent = "A channel was added since this page was loaded. ";
      var link = document.createElement("a");
      link.href = window.location.href;
      link.textContent = "Reload";
      element.appendChild(link);
      element.classList.add("stale");
    }
    function onHealth(event) {
      var data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      if (!data.channel_id || !data.state) { return; }
      var badges = marked("data-channel-state", data.channel_id);
      if (badges.length === 0) {
        if (data.state !== "stopped" && !added) { addedElsewhere(); }
        return;
      }
      var error = data.last_error || "";
      var changed = false;
      badges.forEach(function (badge) {
        if (badge.textContent !== data.state) { changed = true; }
        badge.textContent = data.state;
        badge.className = "status health s-" + data.state;
      });
      marked("data-channel-error", data.channel_id).forEach(function (node) {
        node.textContent = error || node.getAttribute("data-none") || "";
        node.title = error;
        node.classList.toggle("error", error !== "");
      });
      if (changed && !added) {
        element.textContent = (badges[0].getAttribute("data-channel-name") || "A channel") + " is " +
          data.state.replace(/_/g, " ") + (error ? ": " + error : "");
      }
    }
    function open() {
      source = stream(url);
      source.addEventListener("channel.health", onHealth);
      source.onopen = function () { delay = 1000; element.classList.remove("offline"); };
      source.onerror = function () {
        source.close();
        element.classList.add("offline");
        window.setTimeout(open, delay);
        delay = Math.min(delay * 2, 30000);
      };
    }
    open();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(followLive);
    document.querySelectorAll("[data-agent-stream]").forEach(followAgent);
    document.querySelectorAll("[data-channel-health]").forEach(followChannels);
  });
})();
