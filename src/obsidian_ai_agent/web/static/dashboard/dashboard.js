/* The operator's dashboard: signs in with an admin key, then reads the admin API every 10 seconds.

The key lives in this tab's sessionStorage and goes out only in the X-API-Key header (never in a URL).
Everything the service sends is put on the page as text (textContent / text nodes), never as markup.
*/
(function () {
  "use strict";

  var BASE = document.body.getAttribute("data-base") || "";
  var KEY_STORE = "oaa.dashboard.key";
  var NAME_STORE = "oaa.dashboard.ackBy";
  var REFRESH_MS = 10000;
  // The detailed health check runs every check for real (an integrity check of the database, a probe
  // of the model): read it every 30 s, or at once when asked with the Refresh button.
  var HEALTH_MS = 30000;
  var WINDOW_NAMES = { "1h": "the last hour", "1d": "the last day", "30d": "the last 30 days" };
  var SLOW_SHOWN = 25;

  var state = {
    window: "1h",
    job: null,
    route: null,
    routes: [],
    timer: null,
    busy: false,
    again: false,
    epoch: 0,
    healthAt: 0,
    charts: {},
    samples: null,
    alerts: {},
    ackId: null,
  };

  function $(id) {
    return document.getElementById(id);
  }

  /* A new element: `props` sets class, data-*, listeners (on...), booleans and attributes; children
     that are strings or numbers become text nodes. */
  function el(tag, props) {
    var node = document.createElement(tag);
    var key;
    props = props || {};
    for (key in props) {
      if (!Object.prototype.hasOwnProperty.call(props, key)) continue;
      var value = props[key];
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.keys(value).forEach(function (k) { node.dataset[k] = value[k]; });
      else if (key.slice(0, 2) === "on") node.addEventListener(key.slice(2), value);
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, String(value));
    }
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) child.forEach(function (c) { append(node, c); });
    else if (typeof child === "string" || typeof child === "number") node.appendChild(document.createTextNode(String(child)));
    else node.appendChild(child);
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function setText(id, text) {
    $(id).textContent = text;
  }

  // -- formatting ---------------------------------------------------------------------------------

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function clock(seconds) {
    var d = new Date(seconds * 1000);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function when(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    var d = new Date(seconds * 1000);
    var today = new Date();
    if (d.toDateString() === today.toDateString()) return clock(seconds);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + clock(seconds);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
    seconds = Math.max(0, seconds);
    if (seconds < 10) return seconds.toFixed(1) + " s";
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.round(seconds % 60) + " s";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h " + Math.round((seconds % 3600) / 60) + " min";
    return Math.floor(seconds / 86400) + " d " + Math.round((seconds % 86400) / 3600) + " h";
  }

  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    return duration(Date.now() / 1000 - seconds) + " ago";
  }

  function num(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return "—";
    var d = digits === undefined ? 2 : digits;
    return Number(v).toLocaleString(undefined, { maximumFractionDigits: d });
  }

  function ms(v) {
    return v === null || v === undefined ? "—" : num(v, v < 10 ? 2 : 0) + " ms";
  }

  function pct(v, digits) {
    return v === null || v === undefined ? "—" : num(v, digits === undefined ? 1 : digits) + " %";
  }

  function bytes(v) {
    if (v === null || v === undefined) return "—";
    var units = ["B", "KB", "MB", "GB", "TB"];
    var i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return num(v, i ? 1 : 0) + " " + units[i];
  }

  // -- the API ------------------------------------------------------------------------------------

  function ApiFailure(status, message, code) {
    this.status = status;
    this.message = message;
    this.code = code || null;
  }

  function key() {
    try {
      return window.sessionStorage.getItem(KEY_STORE);
    } catch (e) {
      return null;
    }
  }

  /* One call to the admin API with the key in the X-API-Key header; the error shape's message on
     failure. A 401 or 403 signs out and shows the sign-in with the server's message. */
  function api(path, options) {
    options = options || {};
    var secret = key();
    if (!secret) return Promise.reject(new ApiFailure(401, "signed out", "signed_out"));
    var epoch = state.epoch;
    var headers = { "X-API-Key": secret, Accept: "application/json" };
    var init = { method: options.method || "GET", headers: headers, cache: "no-store", credentials: "omit" };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    return fetch(BASE + path, init).then(
      function (resp) {
        return resp.text().then(function (text) {
          var data = null;
          if (text) {
            try {
              data = JSON.parse(text);
            } catch (e) {
              data = null;
            }
          }
          if (resp.ok) return data;
          var err = data && data.error ? data.error : {};
          var failure = new ApiFailure(resp.status, err.message || resp.status + " " + resp.statusText, err.code);
          if ((resp.status === 401 || resp.status === 403) && epoch === state.epoch) signOut(failure.message);
          throw failure;
        });
      },
      function (e) {
        throw new ApiFailure(0, "the service did not answer (" + (e && e.message ? e.message : e) + ")", "network");
      }
    );
  }

  function unavailable(err) {
    return err && (err.status === 404 || err.status === 405);
  }

  function describe(err) {
    if (!err) return "";
    return err.status ? err.status + ": " + err.message : err.message || String(err);
  }

  // -- sign-in ------------------------------------------------------------------------------------

  function signedIn() {
    return !!key();
  }

  function showApp() {
    $("signin").hidden = true;
    $("app").hidden = false;
    $("signout").hidden = false;
    $("refresh").hidden = false;
  }

  function signOut(message) {
    try {
      window.sessionStorage.removeItem(KEY_STORE);
    } catch (e) {
      /* storage off: nothing was kept */
    }
    state.epoch++;
    clearTimeout(state.timer);
    state.timer = null;
    state.job = null;
    state.route = null;
    state.samples = null;
    state.alerts = {};
    state.healthAt = 0;
    Object.keys(state.charts).forEach(function (name) {
      state.charts[name].destroy();
    });
    state.charts = {};
    ["components", "system"].forEach(function (id) { clear($(id)); });
    ["alerts-open", "alerts-recent", "jobs-table", "routes-table"].forEach(function (id) {
      clear($(id).tBodies[0]);
    });
    ["job-profile", "route-detail"].forEach(function (id) {
      clear($(id)).hidden = true;
    });
    var dialog = $("ack-dialog");
    if (dialog.open) dialog.close();
    $("app").hidden = true;
    $("signout").hidden = true;
    $("refresh").hidden = true;
    $("signin").hidden = false;
    var pill = $("overall");
    pill.setAttribute("data-state", "unknown");
    pill.textContent = "signed out";
    setText("updated", "");
    setText("signin-error", message || "");
    $("signin-key").value = "";
    $("signin-submit").disabled = false;
    $("signin-key").focus();
  }

  function onSignIn(event) {
    event.preventDefault();
    var secret = $("signin-key").value.trim();
    if (!secret) {
      setText("signin-error", "enter the admin API key");
      return;
    }
    window.sessionStorage.setItem(KEY_STORE, secret);
    state.epoch++;
    var epoch = state.epoch;
    $("signin-submit").disabled = true;
    setText("signin-error", "");
    // Any admin route proves the key; this one is cheap.
    api("/api/jobs?limit=1").then(
      function () {
        if (epoch !== state.epoch) return;
        $("signin-key").value = "";
        $("signin-submit").disabled = false;
        showApp();
        refresh();
      },
      function (err) {
        if (epoch !== state.epoch) return; // a 401/403 has signed out and shown the message already
        $("signin-submit").disabled = false;
        setText("signin-error", describe(err));
        window.sessionStorage.removeItem(KEY_STORE);
      }
    );
  }

  // -- refreshing ---------------------------------------------------------------------------------

  function banner(text) {
    var b = $("banner");
    b.textContent = text || "";
    b.hidden = !text;
  }

  function schedule() {
    clearTimeout(state.timer);
    state.timer = signedIn() ? setTimeout(refresh, REFRESH_MS) : null;
  }

  /* Everything the page shows, read again; each part is drawn as soon as its answer arrives, and a part
     that fails says so without holding up the others. */
  function refresh(everything) {
    if (!signedIn()) return Promise.resolve();
    if (state.busy) {
      state.again = true;
      return Promise.resolve();
    }
    state.busy = true;
    clearTimeout(state.timer);
    var epoch = state.epoch;
    var problems = [];
    var parts = [];
    if (everything || Date.now() - state.healthAt >= HEALTH_MS - 500) {
      state.healthAt = Date.now();
      parts.push(["health", "/api/health/detailed", renderHealth]);
    }
    parts = parts.concat([
      ["alerts", "/api/health/alerts", renderAlerts],
      ["monitor", "/api/monitor", renderMonitor],
      ["samples", "/api/monitor/samples?window=" + encodeURIComponent(state.window), renderSamples],
      ["jobs", "/api/jobs?limit=25", renderJobs],
      ["routes", "/api/performance/metrics", renderRoutes],
    ]);
    if (state.job !== null) parts.push(["job", "/api/jobs/" + encodeURIComponent(state.job) + "?slowest=10", renderJobProfile]);
    if (state.route !== null) parts.push(["slow requests", "/api/performance/tracing/slow-requests?limit=1000", renderSlow]);
    var calls = parts.map(function (part) {
      return api(part[1]).then(
        function (data) {
          if (epoch !== state.epoch) return;
          try {
            part[2](data, null);
          } catch (e) {
            problems.push(part[0] + ": " + e.message);
            if (window.console) console.error(e);
          }
        },
        function (err) {
          if (epoch !== state.epoch) return;
          if (!unavailable(err)) problems.push(part[0] + ": " + describe(err));
          try {
            part[2](null, err);
          } catch (e) {
            problems.push(part[0] + ": " + e.message);
          }
        }
      );
    });
    return Promise.all(calls).then(function () {
      state.busy = false;
      if (epoch !== state.epoch) return;
      banner(problems.length ? "Some figures could not be read: " + problems.join("; ") : "");
      setText("updated", "updated " + clock(Date.now() / 1000));
      if (state.again) {
        state.again = false;
        refresh();
      } else {
        schedule();
      }
    });
  }

  // -- health -------------------------------------------------------------------------------------

  function renderHealth(h, err) {
    var pill = $("overall");
    if (err) {
      pill.setAttribute("data-state", "unknown");
      pill.textContent = "unknown";
      setText("health-summary", "health could not be read: " + describe(err));
      return;
    }
    pill.setAttribute("data-state", h.status);
    pill.textContent = h.status;
    setText(
      "health-summary",
      "Service " + h.status + " · version " + h.version + " · up " + duration(h.uptime_s) + " · checked " + clock(h.checked_at)
    );
    var cards = clear($("components"));
    Object.keys(h.components || {}).forEach(function (name) {
      var c = h.components[name];
      cards.appendChild(
        el(
          "div",
          { class: "card", "data-state": c.state, "data-component": name },
          el("div", { class: "name" }, el("span", null, name), el("span", { class: "pill", "data-state": c.state }, c.state)),
          el("div", { class: "msg" }, c.message),
          c.latency_ms !== undefined && c.latency_ms !== null ? el("div", { class: "msg" }, "checked in " + ms(c.latency_ms)) : null
        )
      );
    });
    var s = h.system || {};
    var figures = [
      ["CPU", pct(s.cpu_percent)],
      ["Memory", pct(s.memory_percent)],
      ["Disk used", pct(s.disk_used_percent)],
      ["Disk free", bytes(s.disk_free_bytes)],
      ["Service memory", bytes(s.process_rss_bytes)],
      ["Threads", num(s.process_threads, 0)],
      ["Load average", (s.load_average || []).map(function (x) { return num(x, 2); }).join(" ")],
      ["CPUs", num(s.cpu_count, 0)],
    ];
    var dl = clear($("system"));
    figures.forEach(function (f) {
      dl.appendChild(el("div", null, el("dt", null, f[0]), el("dd", null, f[1])));
    });
  }

  function renderMonitor(m, err) {
    var line = $("monitor-line");
    if (err) {
      line.textContent = unavailable(err) ? "monitor: not available on this server" : "monitor: " + describe(err);
      return;
    }
    if (!m.enabled) {
      line.textContent = "monitor: off (no samples are taken and no alerts raised)";
      return;
    }
    var text = "monitor: sampling every " + num(m.interval_s, 1) + " s, ";
    text += m.last_sample_at ? "last sample " + ago(m.last_sample_at) : "no sample yet";
    text += m.holder && m.holder.holder ? " (by " + m.holder.holder + ")" : " (no process holds it now)";
    var rules = (m.rules || []).length;
    var channels = (m.channels || []).length;
    text += " · " + rules + " rule" + (rules === 1 ? "" : "s") + ", " + channels + " channel" + (channels === 1 ? "" : "s");
    line.textContent = text;
  }

  // -- alerts -------------------------------------------------------------------------------------

  function ackCell(a) {
    if (a.acked_by) {
      return el(
        "td",
        { class: "wrap ack-info" },
        "by " + a.acked_by + (a.acked_at ? " at " + when(a.acked_at) : ""),
        a.ack_note ? el("div", { class: "muted" }, a.ack_note) : null
      );
    }
    if (a.state !== "firing") return el("td", { class: "muted" }, "—");
    return el(
      "td",
      null,
      el("button", { type: "button", class: "ack", "data-alert-id": a.id, onclick: function () { openAck(a.id); } }, "Acknowledge")
    );
  }

  function alertName(a) {
    return el(
      "td",
      { class: "wrap" },
      el("strong", null, a.rule),
      a.rollback ? el("span", { class: "pill", "data-state": "critical" }, "rollback recommended") : null,
      el("div", null, a.summary || "")
    );
  }

  function renderAlerts(data, err) {
    var open = clear($("alerts-open").tBodies[0]);
    var recent = clear($("alerts-recent").tBodies[0]);
    state.alerts = {};
    if (err) {
      setText("alerts-note", unavailable(err) ? "Alerts are not available on this server." : "Alerts could not be read: " + describe(err));
      open.appendChild(el("tr", null, el("td", { colspan: 5, class: "empty-row" }, "not available")));
      return;
    }
    var firing = data.open || [];
    // `recent` holds every alert of the last day, the open ones too: those are in the table above.
    var resolved = (data.recent || []).filter(function (a) { return a.state === "resolved"; });
    firing.concat(resolved).forEach(function (a) {
      state.alerts[a.id] = a;
    });
    var unacked = firing.filter(function (a) { return !a.acked_by; }).length;
    setText(
      "alerts-note",
      firing.length
        ? firing.length + " open, " + unacked + " not acknowledged"
        : "No open alerts."
    );
    firing.forEach(function (a) {
      open.appendChild(
        el(
          "tr",
          { "data-alert-id": a.id, "data-rule": a.rule },
          el("td", null, el("span", { class: "pill", "data-state": a.severity }, a.severity)),
          alertName(a),
          el("td", { class: "nowrap", title: when(a.started_at) }, ago(a.started_at)),
          el("td", { class: "nowrap" }, num(a.value, 3) + " (limit " + num(a.threshold, 3) + ")"),
          ackCell(a)
        )
      );
    });
    if (!firing.length) open.appendChild(el("tr", null, el("td", { colspan: 5, class: "empty-row" }, "nothing is firing")));
    resolved.forEach(function (a) {
      recent.appendChild(
        el(
          "tr",
          { "data-alert-id": a.id, "data-rule": a.rule },
          el("td", null, el("span", { class: "pill", "data-state": a.severity }, a.severity)),
          alertName(a),
          el("td", { class: "nowrap" }, when(a.started_at)),
          el("td", { class: "nowrap" }, when(a.resolved_at)),
          ackCell(a)
        )
      );
    });
    if (!resolved.length) recent.appendChild(el("tr", null, el("td", { colspan: 5, class: "empty-row" }, "none")));
  }

  function openAck(id) {
    var a = state.alerts[id];
    if (!a) return;
    state.ackId = id;
    setText("ack-alert", a.rule + ": " + (a.summary || ""));
    var saved = null;
    try {
      saved = window.sessionStorage.getItem(NAME_STORE);
    } catch (e) {
      saved = null;
    }
    $("ack-by").value = saved || "";
    $("ack-note").value = "";
    setText("ack-error", "");
    $("ack-submit").disabled = false;
    $("ack-dialog").showModal();
    (saved ? $("ack-note") : $("ack-by")).focus();
  }

  function onAck(event) {
    event.preventDefault();
    var by = $("ack-by").value.trim();
    var note = $("ack-note").value.trim();
    if (!by) {
      setText("ack-error", "say who you are");
      return;
    }
    var id = state.ackId;
    $("ack-submit").disabled = true;
    api("/api/health/alerts/" + encodeURIComponent(id) + "/acknowledge", { method: "POST", body: { by: by, note: note } }).then(
      function () {
        try {
          window.sessionStorage.setItem(NAME_STORE, by);
        } catch (e) {
          /* not remembered */
        }
        $("ack-dialog").close();
        refresh();
      },
      function (err) {
        $("ack-submit").disabled = false;
        setText("ack-error", describe(err));
      }
    );
  }

  // -- graphs -------------------------------------------------------------------------------------

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  /* Each chart: the sample fields it draws, how a value is scaled for display, its y range. */
  var CHARTS = {
    requests: {
      series: [["request_rate", "requests/s", "--series-1"]],
      scale: 1,
      unit: "/s",
      fixed: null,
    },
    errors: {
      series: [["error_rate", "5xx", "--series-3"]],
      scale: 100,
      unit: " %",
      fixed: null,
      dots: true,
    },
    latency: {
      series: [
        ["latency_p50_s", "p50", "--series-1"],
        ["latency_p95_s", "p95", "--series-2"],
        ["latency_p99_s", "p99", "--series-3"],
      ],
      scale: 1000,
      unit: " ms",
      fixed: null,
      dots: true,
    },
    system: {
      series: [
        ["cpu_percent", "CPU", "--series-1"],
        ["memory_percent", "memory", "--series-2"],
        ["disk_percent", "disk", "--series-4"],
      ],
      scale: 1,
      unit: " %",
      fixed: [0, 100],
    },
  };

  function chartData(spec, samples, resolution) {
    var xs = [];
    var ys = spec.series.map(function () { return []; });
    var gap = Math.max(resolution || 0, 1) * 2.5;
    var prev = null;
    samples.forEach(function (s) {
      if (typeof s.at !== "number") return;
      // No sample for a while (the service was down, or the monitor off): a gap, not a straight line.
      if (prev !== null && s.at - prev > gap) {
        xs.push(prev + gap / 2);
        ys.forEach(function (y) { y.push(null); });
      }
      xs.push(s.at);
      spec.series.forEach(function (f, i) {
        var v = s[f[0]];
        ys[i].push(typeof v === "number" && isFinite(v) ? v * spec.scale : null);
      });
      prev = s.at;
    });
    return [xs].concat(ys);
  }

  function chartOptions(spec, width) {
    var fg = cssVar("--muted") || "#666";
    var grid = cssVar("--grid") || "rgba(0,0,0,0.08)";
    var axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    // 24-hour local times as elsewhere on the page, one line, as precise as the ticks are apart.
    var xaxis = Object.assign({}, axis, {
      space: 70,
      size: 34,
      values: function (u, splits, axisIdx, space, incr) {
        return splits.map(function (s) {
          var d = new Date(s * 1000);
          if (incr >= 86400) return pad(d.getMonth() + 1) + "-" + pad(d.getDate());
          var hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
          return incr < 60 ? hm + ":" + pad(d.getSeconds()) : hm;
        });
      },
    });
    var yaxis = Object.assign({}, axis, {
      size: 56,
      values: function (u, vals) {
        return vals.map(function (v) { return num(v, v < 10 ? 2 : 0); });
      },
    });
    return {
      width: width,
      height: 200,
      cursor: { drag: { x: true, y: false } },
      legend: { show: true, live: true },
      scales: {
        x: { time: true },
        y: {
          range: function (u, min, max) {
            if (spec.fixed) return spec.fixed;
            var top = max === null || max === undefined || !isFinite(max) ? 1 : max;
            return [0, top > 0 ? top * 1.15 : 1];
          },
        },
      },
      axes: [xaxis, yaxis],
      series: [{}].concat(
        spec.series.map(function (f) {
          return {
            label: f[1],
            stroke: cssVar(f[2]) || "#7c5cbf",
            width: 1.6,
            spanGaps: false,
            // Figures only some intervals have (latency needs requests): dots, so a lone one shows.
            points: spec.dots ? { show: true, size: 4, fill: cssVar(f[2]) || "#7c5cbf" } : { show: false },
            value: function (u, v) {
              return v === null || v === undefined ? "—" : num(v, v < 10 ? 2 : 1) + spec.unit;
            },
          };
        })
      ),
    };
  }

  function plotWidth(plot) {
    return Math.max(plot.clientWidth || 0, 240);
  }

  function drawChart(name, data) {
    var figure = $("chart-" + name);
    var plot = figure.querySelector(".plot");
    var points = 0;
    for (var i = 1; i < data.length; i++) {
      data[i].forEach(function (v) {
        if (v !== null) points++;
      });
    }
    figure.setAttribute("data-points", String(points));
    figure.querySelector(".empty").hidden = points > 0;
    var chart = state.charts[name];
    if (!chart) {
      chart = new window.uPlot(chartOptions(CHARTS[name], plotWidth(plot)), data, plot);
      state.charts[name] = chart;
    } else {
      chart.setData(data);
    }
  }

  function renderSamples(data, err) {
    var note = $("graphs-note");
    if (err) {
      state.samples = null;
      note.textContent = unavailable(err)
        ? "Graphs are not available: this server keeps no samples (no /api/monitor/samples)."
        : "The samples could not be read: " + describe(err);
      Object.keys(CHARTS).forEach(function (name) {
        var figure = $("chart-" + name);
        figure.setAttribute("data-points", "0");
        var empty = figure.querySelector(".empty");
        empty.textContent = "not available";
        empty.hidden = false;
      });
      return;
    }
    state.samples = data;
    var samples = data.samples || [];
    var text = samples.length
      ? samples.length + " samples over " + WINDOW_NAMES[state.window] + ", one per " + duration(data.resolution_s)
      : "No samples in " + WINDOW_NAMES[state.window] + " yet.";
    if (samples.length) text += " (from " + when(samples[0].at) + ")";
    note.textContent = text;
    Object.keys(CHARTS).forEach(function (name) {
      $("chart-" + name).querySelector(".empty").textContent = "no data in this window";
      drawChart(name, chartData(CHARTS[name], samples, data.resolution_s));
    });
  }

  function redrawCharts() {
    Object.keys(state.charts).forEach(function (name) {
      state.charts[name].destroy();
    });
    state.charts = {};
    if (state.samples) renderSamples(state.samples, null);
  }

  function resizeCharts() {
    Object.keys(state.charts).forEach(function (name) {
      var plot = $("chart-" + name).querySelector(".plot");
      var chart = state.charts[name];
      var width = plotWidth(plot);
      if (Math.abs(chart.width - width) > 2) chart.setSize({ width: width, height: 200 });
    });
  }

  function chooseWindow(event) {
    var button = event.target.closest("button[data-window]");
    if (!button) return;
    state.window = button.getAttribute("data-window");
    Array.prototype.forEach.call($("windows").querySelectorAll("button"), function (b) {
      b.setAttribute("aria-pressed", b === button ? "true" : "false");
    });
    var epoch = state.epoch;
    var wanted = state.window;
    api("/api/monitor/samples?window=" + encodeURIComponent(wanted)).then(
      function (data) {
        if (epoch === state.epoch && wanted === state.window) renderSamples(data, null);
      },
      function (err) {
        if (epoch === state.epoch && wanted === state.window) renderSamples(null, err);
      }
    );
  }

  // -- jobs ---------------------------------------------------------------------------------------

  function progressCell(j) {
    var p = j.progress || {};
    var bar = el("progress", { max: p.total ? p.total : null, value: p.total ? Math.min(p.done, p.total) : null });
    if (!p.total && j.status !== "running") bar = null;
    if (p.total && j.status === "succeeded") bar.value = p.total;
    var text = p.total ? num(p.done, 0) + " / " + num(p.total, 0) : p.done ? num(p.done, 0) : "";
    if (p.stage) text += (text ? " · " : "") + p.stage;
    return el("td", { class: "nowrap" }, bar, " ", text);
  }

  function selectRow(tbody, keyValue) {
    Array.prototype.forEach.call(tbody.rows, function (row) {
      row.setAttribute("aria-selected", row.getAttribute("data-key") === String(keyValue) ? "true" : "false");
    });
  }

  function onRowKey(event) {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      event.currentTarget.click();
    }
  }

  function renderJobs(data, err) {
    var tbody = clear($("jobs-table").tBodies[0]);
    if (err) {
      setText("jobs-note", "Jobs could not be read: " + describe(err));
      return;
    }
    var jobs = data.jobs || [];
    var running = jobs.filter(function (j) { return j.status === "running"; }).length;
    var queued = jobs.filter(function (j) { return j.status === "queued"; }).length;
    setText("jobs-note", jobs.length ? running + " running, " + queued + " queued (the latest " + jobs.length + " shown). Click a job for its stage profile." : "No jobs yet.");
    jobs.forEach(function (j) {
      var status = j.status + (j.cancel_requested && (j.status === "running" || j.status === "queued") ? " (cancelling)" : "") + (j.timed_out ? " (timed out)" : "");
      var cancellable = (j.status === "queued" || j.status === "running") && !j.cancel_requested;
      tbody.appendChild(
        el(
          "tr",
          {
            "data-key": j.id,
            "data-job-id": j.id,
            tabindex: 0,
            "aria-selected": state.job === j.id ? "true" : "false",
            onclick: function () { openJob(j.id); },
            onkeydown: onRowKey,
          },
          el("td", { class: "nowrap" }, "#" + j.id),
          el("td", null, j.kind, el("div", { class: "muted" }, j.lane)),
          el("td", null, el("span", { class: "status", "data-status": j.status }, status), j.error ? el("div", { class: "muted wrap" }, j.error) : null),
          progressCell(j),
          el("td", { class: "nowrap" }, j.status === "running" ? duration(j.eta_seconds) : j.duration_seconds !== null ? "took " + duration(j.duration_seconds) : "—"),
          el("td", { class: "nowrap" }, when(j.created_at)),
          el(
            "td",
            null,
            cancellable
              ? el("button", { type: "button", class: "danger cancel", "data-job-id": j.id, onclick: function (e) { e.stopPropagation(); cancelJob(j.id); } }, "Cancel")
              : null
          )
        )
      );
    });
    if (!jobs.length) tbody.appendChild(el("tr", null, el("td", { colspan: 7, class: "empty-row" }, "no jobs")));
  }

  function cancelJob(id) {
    if (!window.confirm("Cancel job #" + id + "? A running job stops at its next check and keeps what it wrote.")) return;
    api("/api/jobs/" + encodeURIComponent(id), { method: "DELETE" }).then(
      function (r) {
        banner("Job #" + id + ": " + (r.status === "running" ? "cancel requested, it stops at its next check" : r.status));
        refresh();
      },
      function (err) {
        banner("Job #" + id + " could not be cancelled: " + describe(err));
      }
    );
  }

  function openJob(id) {
    state.job = id;
    selectRow($("jobs-table").tBodies[0], id);
    var box = $("job-profile");
    box.hidden = false;
    if (!box.firstChild) box.appendChild(el("p", { class: "muted" }, "loading job #" + id + "…"));
    var epoch = state.epoch;
    api("/api/jobs/" + encodeURIComponent(id) + "?slowest=10").then(
      function (d) {
        if (epoch === state.epoch && state.job === id) renderJobProfile(d, null);
      },
      function (err) {
        if (epoch === state.epoch && state.job === id) renderJobProfile(null, err);
      }
    );
  }

  function closeButton(onclick) {
    return el("button", { type: "button", class: "quiet close", onclick: onclick }, "Close");
  }

  function renderJobProfile(d, err) {
    var box = clear($("job-profile"));
    box.hidden = false;
    var close = closeButton(function () {
      state.job = null;
      clear(box).hidden = true;
      selectRow($("jobs-table").tBodies[0], null);
    });
    if (err) {
      box.appendChild(el("div", { class: "panel-head" }, el("h3", null, "Job #" + state.job), close));
      box.appendChild(el("p", { class: "error" }, "The job could not be read: " + describe(err)));
      return;
    }
    box.setAttribute("data-job-id", String(d.id));
    box.appendChild(el("div", { class: "panel-head" }, el("h3", null, "Job #" + d.id + " · " + d.kind + " · " + d.status), close));
    var p = d.progress || {};
    var figures = [
      ["Lane", d.lane],
      ["Attempts", num(d.attempts, 0)],
      ["Created", when(d.created_at)],
      ["Started", when(d.started_at)],
      ["Finished", when(d.finished_at)],
      ["Duration", duration(d.duration_seconds)],
      ["Items", p.total ? num(p.done, 0) + " / " + num(p.total, 0) : num(p.done, 0)],
      ["ETA", d.status === "running" ? duration(d.eta_seconds) : "—"],
    ];
    var dl = el("dl", { class: "figures" });
    figures.forEach(function (f) {
      dl.appendChild(el("div", null, el("dt", null, f[0]), el("dd", null, f[1])));
    });
    box.appendChild(dl);
    if (d.error) box.appendChild(el("p", { class: "error wrap" }, d.error));
    box.appendChild(el("h3", null, "Stage profile"));
    var stages = d.stages || [];
    if (!stages.length) {
      box.appendChild(el("p", { class: "muted" }, "No stage timings were recorded for this job."));
    } else {
      var body = el("tbody");
      stages.forEach(function (s) {
        body.appendChild(
          el(
            "tr",
            { "data-stage": s.stage },
            el("td", null, s.stage),
            el("td", { class: "num" }, s.seconds === null ? "—" : num(s.seconds, 3) + " s"),
            el("td", { class: "nowrap" }, s.share === null ? "—" : [el("meter", { min: 0, max: 1, value: s.share }), " ", pct(s.share * 100, 0)]),
            el("td", { class: "num" }, num(s.items, 0)),
            el("td", { class: "num" }, bytes(s.bytes)),
            el("td", { class: "num" }, s.items_per_s === null ? "—" : num(s.items_per_s, 1))
          )
        );
      });
      box.appendChild(
        el(
          "div",
          { class: "scroll" },
          el(
            "table",
            { class: "grid stages" },
            el("thead", null, el("tr", null, el("th", null, "Stage"), el("th", { class: "num" }, "Time"), el("th", null, "Share"), el("th", { class: "num" }, "Items"), el("th", { class: "num" }, "Bytes"), el("th", { class: "num" }, "Items/s"))),
            body
          )
        )
      );
    }
    var items = d.slowest_items || [];
    if (items.length) {
      box.appendChild(el("h3", null, "Slowest items"));
      var rows = el("tbody");
      items.forEach(function (it) {
        rows.appendChild(
          el(
            "tr",
            null,
            el("td", { class: "wrap" }, it.path),
            el("td", { class: "num" }, it.seconds === null ? "—" : num(it.seconds, 3) + " s"),
            el("td", { class: "num" }, it.parse === null ? "—" : num(it.parse, 3)),
            el("td", { class: "num" }, it.embed === null ? "—" : num(it.embed, 3)),
            el("td", { class: "num" }, it.write === null ? "—" : num(it.write, 3)),
            el("td", { class: "num" }, num(it.chunks, 0)),
            el("td", { class: "num" }, bytes(it.bytes))
          )
        );
      });
      box.appendChild(
        el(
          "div",
          { class: "scroll" },
          el(
            "table",
            { class: "grid slowest" },
            el("thead", null, el("tr", null, el("th", null, "Source"), el("th", { class: "num" }, "Total"), el("th", { class: "num" }, "Parse s"), el("th", { class: "num" }, "Embed s"), el("th", { class: "num" }, "Write s"), el("th", { class: "num" }, "Chunks"), el("th", { class: "num" }, "Bytes"))),
            rows
          )
        )
      );
    }
  }

  // -- routes -------------------------------------------------------------------------------------

  function routeKey(r) {
    return r.method + " " + r.route;
  }

  function renderRoutes(data, err) {
    var tbody = clear($("routes-table").tBodies[0]);
    if (err) {
      setText("routes-note", "Route figures could not be read: " + describe(err));
      return;
    }
    var routes = (data.routes || []).slice().sort(function (a, b) { return b.count - a.count; });
    state.routes = routes;
    setText("routes-note", "Since the service started (" + data.scope + ", " + data.workers + " worker" + (data.workers === 1 ? "" : "s") + "). Click a route for its slow requests.");
    routes.forEach(function (r) {
      var k = routeKey(r);
      tbody.appendChild(
        el(
          "tr",
          { "data-key": k, "data-route": r.route, "data-method": r.method, tabindex: 0, "aria-selected": state.route === k ? "true" : "false", onclick: function () { openRoute(k); }, onkeydown: onRowKey },
          el("td", { class: "wrap" }, el("code", null, r.method), " ", r.route),
          el("td", { class: "num" }, num(r.count, 0)),
          el("td", { class: "num" }, num(r.errors, 0)),
          el("td", { class: "num" }, pct(r.error_rate * 100, 2)),
          el("td", { class: "num" }, ms(r.p50_ms)),
          el("td", { class: "num" }, ms(r.p95_ms)),
          el("td", { class: "num" }, ms(r.p99_ms))
        )
      );
    });
    if (!routes.length) tbody.appendChild(el("tr", null, el("td", { colspan: 7, class: "empty-row" }, "no requests yet")));
    if (state.route !== null) renderRouteHead();
  }

  function openRoute(k) {
    state.route = k;
    selectRow($("routes-table").tBodies[0], k);
    renderRouteHead();
    var epoch = state.epoch;
    api("/api/performance/tracing/slow-requests?limit=1000").then(
      function (d) {
        if (epoch === state.epoch && state.route === k) renderSlow(d, null);
      },
      function (err) {
        if (epoch === state.epoch && state.route === k) renderSlow(null, err);
      }
    );
  }

  function routeBox() {
    var box = $("route-detail");
    if (!box.querySelector(".route-head")) {
      clear(box);
      box.appendChild(el("div", { class: "route-head" }));
      box.appendChild(el("div", { class: "route-slow" }, el("p", { class: "muted" }, "loading slow requests…")));
    }
    box.hidden = false;
    return box;
  }

  function renderRouteHead() {
    var box = routeBox();
    var head = clear(box.querySelector(".route-head"));
    var r = state.routes.filter(function (x) { return routeKey(x) === state.route; })[0];
    box.setAttribute("data-route-key", state.route);
    head.appendChild(
      el(
        "div",
        { class: "panel-head" },
        el("h3", null, state.route),
        closeButton(function () {
          state.route = null;
          clear(box).hidden = true;
          selectRow($("routes-table").tBodies[0], null);
        })
      )
    );
    if (!r) {
      head.appendChild(el("p", { class: "muted" }, "No requests to this route since the service started."));
      return;
    }
    var figures = [
      ["Requests", num(r.count, 0)],
      ["5xx", num(r.errors, 0)],
      ["4xx", num(r.client_errors, 0)],
      ["Error rate", pct(r.error_rate * 100, 2)],
      ["Mean", ms(r.mean_ms)],
      ["p50", ms(r.p50_ms)],
      ["p95", ms(r.p95_ms)],
      ["p99", ms(r.p99_ms)],
    ];
    var dl = el("dl", { class: "figures percentiles" });
    figures.forEach(function (f) {
      dl.appendChild(el("div", null, el("dt", null, f[0]), el("dd", null, f[1])));
    });
    head.appendChild(dl);
  }

  function renderSlow(d, err) {
    if (state.route === null) return;
    var box = routeBox();
    var slow = clear(box.querySelector(".route-slow"));
    if (err) {
      slow.appendChild(el("p", { class: "error" }, "Slow requests could not be read: " + describe(err)));
      return;
    }
    var k = state.route;
    var mine = (d.requests || []).filter(function (x) { return routeKey(x) === k; });
    slow.appendChild(el("h3", null, "Slow requests"));
    slow.appendChild(
      el(
        "p",
        { class: "muted" },
        "Requests slower than " + ms(d.threshold_ms) + " (the latest " + num(d.keep, 0) + " of every route are kept): " + mine.length + " to this route" + (mine.length > SLOW_SHOWN ? ", the newest " + SLOW_SHOWN + " shown." : ".")
      )
    );
    if (!mine.length) return;
    var rows = el("tbody");
    mine.slice(0, SLOW_SHOWN).forEach(function (x) {
      var spans = el("ul", { class: "spans" });
      Object.keys(x.spans || {}).forEach(function (name) {
        spans.appendChild(el("li", null, name + " " + ms(x.spans[name])));
      });
      rows.appendChild(
        el(
          "tr",
          { "data-request-id": x.request_id || "" },
          el("td", { class: "nowrap" }, when(x.time)),
          el("td", { class: "num" }, num(x.status, 0)),
          el("td", { class: "num" }, ms(x.latency_ms)),
          el("td", { class: "wrap" }, x.path, el("div", { class: "muted" }, "request " + (x.request_id || "—") + " · pid " + x.pid)),
          el("td", null, spans)
        )
      );
    });
    slow.appendChild(
      el(
        "div",
        { class: "scroll" },
        el(
          "table",
          { class: "grid slow" },
          el("thead", null, el("tr", null, el("th", null, "When"), el("th", { class: "num" }, "Status"), el("th", { class: "num" }, "Time"), el("th", null, "Path"), el("th", null, "Spans"))),
          rows
        )
      )
    );
  }

  // -- start --------------------------------------------------------------------------------------

  function start() {
    $("signin-form").addEventListener("submit", onSignIn);
    $("signout").addEventListener("click", function () { signOut(""); });
    $("refresh").addEventListener("click", function () { refresh(true); });
    $("windows").addEventListener("click", chooseWindow);
    $("ack-form").addEventListener("submit", onAck);
    $("ack-cancel").addEventListener("click", function () { $("ack-dialog").close(); });
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && signedIn()) refresh();
    });
    if (window.matchMedia) {
      var dark = window.matchMedia("(prefers-color-scheme: dark)");
      if (dark.addEventListener) dark.addEventListener("change", redrawCharts);
    }
    if (window.ResizeObserver) new ResizeObserver(resizeCharts).observe($("graphs"));
    else window.addEventListener("resize", resizeCharts);
    if (signedIn()) {
      showApp();
      refresh();
    } else {
      $("signin-key").focus();
    }
  }

  start();
})();
