// archangel's dashboard: plain JS, no libraries, nothing loaded from elsewhere.
// Data: GET /api/processes (one page, filtered and sorted by the server) and the
// server-sent events of /api/events (overview, lists, plot series, blocked loop).
// Text goes into the page as textContent only, never as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const view = { offset: 0, limit: 50, kind: "", state: "", name: "", sort: "pid" };
  const session = { actions: false, app: false, loggedIn: false, csrf: null, header: "X-CSRF-Token" };
  let loading = false;
  let again = false;
  let serverNow = null; // the server's clock (s) at the last event, for ages
  let clockSkew = 0;

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function row(cells, cls) {
    const tr = el("tr", null, cls);
    for (const cell of cells) {
      if (cell instanceof Node) { const td = el("td"); td.appendChild(cell); tr.appendChild(td); }
      else tr.appendChild(el("td", cell));
    }
    return tr;
  }

  function nowSeconds() { return Date.now() / 1000 + clockSkew; }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    seconds = Math.max(0, seconds);
    if (seconds < 60) return seconds.toFixed(1) + "s";
    const whole = Math.floor(seconds);
    const pad = (n) => String(n).padStart(2, "0");
    if (whole < 3600) return Math.floor(whole / 60) + "m" + pad(whole % 60) + "s";
    if (whole < 86400) return Math.floor(whole / 3600) + "h" + pad(Math.floor(whole % 3600 / 60)) + "m";
    return Math.floor(whole / 86400) + "d" + pad(Math.floor(whole % 86400 / 3600)) + "h";
  }

  function ms(seconds) {
    const m = seconds * 1000;
    if (m < 10) return m.toFixed(2) + " ms";
    if (m < 1000) return m.toFixed(0) + " ms";
    return seconds.toFixed(2) + " s";
  }

  function short(value) {
    if (Array.isArray(value) && value.length >= 2 && typeof value[0] === "string"
        && typeof value[1] === "number") return value[0] + ":" + value[1];
    if (value && typeof value === "object") {
      return "{" + Object.entries(value).map(([k, v]) => k + "=" + short(v)).join(" ") + "}";
    }
    return String(value);
  }

  function details(map) {
    if (!map) return "";
    return Object.entries(map).map(([k, v]) => k + "=" + short(v)).join(" ");
  }

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || ("HTTP " + response.status));
    return body;
  }

  // -- the process table (server-side paging) ---------------------------------------------

  function query() {
    const q = new URLSearchParams({ offset: view.offset, limit: view.limit, sort: view.sort });
    for (const key of ["kind", "state", "name"]) if (view[key]) q.set(key, view[key]);
    return "api/processes?" + q.toString();
  }

  async function loadProcesses() {
    if (loading) { again = true; return; }
    loading = true;
    try {
      const page = await getJSON(query());
      $("proc-error").textContent = "";
      renderProcesses(page);
    } catch (error) {
      $("proc-error").textContent = String(error.message || error);
    } finally {
      loading = false;
      if (again) { again = false; loadProcesses(); }
    }
  }

  function renderProcesses(page) {
    const body = $("proc-rows");
    const rows = [];
    const now = nowSeconds();
    for (const p of page.processes) {
      const kill = el("button", "kill", "kill");
      kill.dataset.pid = p.pid;
      kill.hidden = !session.loggedIn;
      const tr = row([
        String(p.pid), p.kind, p.state, age(p.started === null ? null : now - p.started),
        p.name, details(p.details), kill,
      ], p.state);
      tr.dataset.pid = p.pid;
      tr.children[5].className = "details";
      tr.children[5].title = details(p.details);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    const first = page.count ? page.offset + 1 : 0;
    $("shown").textContent = page.count
      ? `showing ${first}-${page.offset + page.count} of ${page.total}` + (page.truncated ? " (cut to fit)" : "")
      : `no processes match (offset ${page.offset} of ${page.total})`;
    $("prev").disabled = page.offset === 0;
    $("next").disabled = page.next_offset === null;
    $("next").dataset.offset = page.next_offset === null ? "" : page.next_offset;
  }

  function readFilter() {
    view.kind = $("f-kind").value.trim();
    view.state = $("f-state").value;
    view.name = $("f-name").value.trim();
    view.sort = $("f-sort").value;
    view.limit = parseInt($("f-limit").value, 10) || 50;
  }

  // -- plots (inline SVG) --------------------------------------------------------------------

  function plot(svg, points, columns, classes, horizon) {
    const W = 600, H = 140, top = 12, bottom = 4;
    let high = 0;
    for (const p of points) for (const c of columns) high = Math.max(high, p[c]);
    const peak = high;
    high = high > 0 ? high * 1.1 : 1;
    const x = (t) => W * (1 + t / horizon);
    const y = (v) => H - bottom - (H - top - bottom) * (v / high);
    const nodes = [];
    for (let i = 1; i < 4; i++) {
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("x1", 0); line.setAttribute("x2", W);
      line.setAttribute("y1", y(high * i / 4)); line.setAttribute("y2", y(high * i / 4));
      line.setAttribute("class", "grid");
      nodes.push(line);
    }
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", 4); label.setAttribute("y", 10);
    label.textContent = "max " + (peak >= 100 ? peak.toFixed(0) : peak.toPrecision(3));
    nodes.push(label);
    columns.forEach((c, i) => {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", points.map((p) => x(p[0]).toFixed(1) + "," + y(p[c]).toFixed(1)).join(" "));
      line.setAttribute("class", "line " + classes[i]);
      nodes.push(line);
    });
    svg.replaceChildren(...nodes);
  }

  // -- the overview event ---------------------------------------------------------------------

  function onOverview(data) {
    clockSkew = data.now - Date.now() / 1000;
    serverNow = data.now;
    $("app-name").textContent = data.app || "(manager)";
    $("app-state").textContent = data.state ? data.state + (data.stopping ? " (stopping)" : "") : "no lifecycle";
    $("app-state").className = "badge " + (data.state || "");
    const c = data.stats.counters;
    $("summary").textContent = `${c.running} running, ${c.started} started, ${c.exited} exited ` +
      `(${c.killed} killed, ${c.failed} failed)`;
    $("lag-now").textContent = "now " + ms(data.stats.lag.now) + ", max in 10 s " + ms(data.stats.lag.max_10s);

    const blocked = data.blocked;
    $("blocked").hidden = !blocked;
    if (blocked) {
      $("blocked-head").textContent = `The app loop is blocked: no answer for ${ms(blocked.seconds)}. ` +
        "Where it is (the console's stack):";
      $("blocked-stack").textContent = blocked.stack;
    }

    const horizon = data.series.horizon;
    const lag = data.series.lag.map((p) => [p[0], p[1] * 1000]);
    plot($("plot-lag"), lag, [1], ["lag"], horizon);
    plot($("plot-rates"), data.series.rates, [3, 4, 1, 2], ["k0", "k1", "k2", "k3"], horizon);

    const pipes = data.pipelines.map((p) => {
      const k = p.counters || {};
      const tr = row([String(p.pid), p.name, k.in, k.out, k.in_flight, k.swallowed, k.failed, k.dropped]);
      tr.dataset.pid = p.pid;
      return tr;
    });
    $("pipe-rows").replaceChildren(...(pipes.length ? pipes : [row(["-", "no pipelines running"])]));

    const sups = data.supervisors.map((s) => {
      const li = el("li", `pid ${s.pid} ${s.name} [${s.state}] ${s.strategy || ""}, ` +
        `${s.restarts} restart(s), ${s.children.length} child(ren)`);
      li.dataset.pid = s.pid;
      const ul = el("ul");
      for (const child of s.children) {
        const item = el("li", `pid ${child.pid} ${child.kind} ${child.name} [${child.state}]`);
        item.dataset.pid = child.pid;
        ul.appendChild(item);
      }
      li.appendChild(ul);
      return li;
    });
    $("supervisors").replaceChildren(...(sups.length ? sups : [el("li", "no supervisors running", "muted")]));

    const hist = data.history;
    $("hist-count").textContent = `(last ${hist.count} of ${hist.total} completed, newest first)`;
    const rows = hist.processes.slice().reverse().map((r) => {
      const lifetime = r.started === null || r.ended === null ? null : r.ended - r.started;
      const ended = r.ended === null ? "-" : new Date(r.ended * 1000).toLocaleTimeString();
      const tr = row([String(r.pid), r.kind, r.exit_reason || "-", ended, age(lifetime), r.name,
        r.error || details(r.details)]);
      tr.dataset.pid = r.pid;
      return tr;
    });
    $("hist-rows").replaceChildren(...rows);
    $("proc-count").textContent = `(${c.running} running)`;
  }

  // -- session and actions --------------------------------------------------------------------

  function showSession() {
    $("readonly").hidden = session.actions;
    $("login").hidden = !session.actions || session.loggedIn;
    $("app-actions").hidden = !session.loggedIn;
    for (const button of document.querySelectorAll("#app-actions [data-action]")) {
      button.hidden = !session.app;
    }
    for (const button of document.querySelectorAll("button.kill")) button.hidden = !session.loggedIn;
  }

  async function loadSession() {
    try {
      const s = await getJSON("api/session");
      session.actions = s.actions; session.app = s.app; session.loggedIn = s.logged_in;
      session.csrf = s.csrf; session.header = s.csrf_header;
    } catch (error) { session.actions = false; }
    showSession();
  }

  function say(text) {
    $("result-text").textContent = text;
    $("result").hidden = false;
  }

  async function post(url, body) {
    const headers = { "Content-Type": "application/json" };
    if (session.csrf) headers[session.header] = session.csrf;
    const response = await fetch(url, {
      method: "POST", headers, body: JSON.stringify(body), credentials: "same-origin", cache: "no-store",
    });
    let answer = {};
    try { answer = await response.json(); } catch (error) { answer = { error: "HTTP " + response.status }; }
    return [response, answer];
  }

  async function act(body) {
    const [response, answer] = await post("api/action", body);
    say(answer.result || answer.error || ("HTTP " + response.status));
    if (response.status === 401) { session.loggedIn = false; session.csrf = null; showSession(); }
    loadProcesses();
  }

  function wire() {
    $("filter").addEventListener("submit", (event) => {
      event.preventDefault(); readFilter(); view.offset = 0; loadProcesses();
    });
    $("prev").addEventListener("click", () => { view.offset = Math.max(0, view.offset - view.limit); loadProcesses(); });
    $("next").addEventListener("click", () => {
      const next = $("next").dataset.offset;
      if (next !== "") { view.offset = parseInt(next, 10); loadProcesses(); }
    });
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.addEventListener("click", () => {
        const key = th.dataset.sort;
        view.sort = view.sort === key ? "-" + key : key;
        const option = [...$("f-sort").options].find((o) => o.value === view.sort);
        if (option) $("f-sort").value = view.sort;
        view.offset = 0; loadProcesses();
      });
    }
    $("proc-rows").addEventListener("click", (event) => {
      const button = event.target.closest("button.kill");
      if (!button) return;
      const pid = parseInt(button.dataset.pid, 10);
      if (window.confirm(`kill pid ${pid}?`)) act({ action: "kill", pids: [pid] });
    });
    for (const button of document.querySelectorAll("#app-actions [data-action]")) {
      button.addEventListener("click", () => {
        const body = { action: button.dataset.action };
        if (button.dataset.which) body.which = button.dataset.which;
        if (body.action !== "stop" || window.confirm("stop the app?")) act(body);
      });
    }
    $("login").addEventListener("submit", async (event) => {
      event.preventDefault();
      const [response, answer] = await post("api/login", { token: $("login-token").value });
      $("login-token").value = "";
      if (response.ok) { session.loggedIn = true; session.csrf = answer.csrf; showSession(); loadProcesses(); }
      else say(answer.error || ("HTTP " + response.status));
    });
    $("logout").addEventListener("click", async () => {
      await post("api/logout", {});
      session.loggedIn = false; session.csrf = null; showSession();
    });
    $("result-close").addEventListener("click", () => { $("result").hidden = true; });
  }

  function connect() {
    // Relative, as every URL of the page: it works at / and under the master's /workers/N/.
    const url = new URL("api/live", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url.href);
    socket.addEventListener("message", (event) => {
      $("link").textContent = "live";
      onOverview(JSON.parse(event.data));
      if ($("f-live").checked) loadProcesses();
    });
    socket.addEventListener("close", () => {
      $("link").textContent = "reconnecting...";
      setTimeout(connect, 2000);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    wire();
    readFilter();
    loadSession().then(loadProcesses);
    connect();
  });
})();
